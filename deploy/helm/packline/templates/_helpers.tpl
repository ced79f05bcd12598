{{/* Labels every object of one service carries; the selector uses the first two. */}}
{{- define "packline.selector" -}}
app.kubernetes.io/name: packline-{{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "packline.labels" -}}
{{ include "packline.selector" . }}
app.kubernetes.io/part-of: packline
app.kubernetes.io/version: {{ .root.Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "packline.image" -}}
{{ .root.Values.image.repository }}-{{ .name }}:{{ .root.Values.image.tag }}
{{- end }}

{{/* The environment of a Packline process: the ConfigMap, then secrets one key at a time. */}}
{{- define "packline.env" -}}
envFrom:
  - configMapRef:
      name: packline-config
env:
  - name: PACKLINE_DATABASE_URL
    valueFrom:
      secretKeyRef: { name: {{ .root.Values.secrets.name }}, key: {{ .name }}-database-url }
  - name: PACKLINE_STAFF_TOKENS
    valueFrom:
      secretKeyRef: { name: {{ .root.Values.secrets.name }}, key: staff-tokens }
  {{- if hasPrefix "SASL_" .root.Values.kafka.securityProtocol }}
  - name: PACKLINE_KAFKA_SASL_USERNAME
    valueFrom:
      secretKeyRef: { name: {{ .root.Values.secrets.name }}, key: kafka-sasl-username }
  - name: PACKLINE_KAFKA_SASL_PASSWORD
    valueFrom:
      secretKeyRef: { name: {{ .root.Values.secrets.name }}, key: kafka-sasl-password }
  {{- end }}
  {{- if eq .name "invoicing" }}
  - name: PACKLINE_CALENDAR_TOKEN
    valueFrom:
      secretKeyRef: { name: {{ .root.Values.secrets.name }}, key: calendar-token }
  {{- end }}
  {{- range $key, $value := .service.env }}
  - name: {{ $key }}
    value: {{ $value | quote }}
  {{- end }}
{{- end }}

{{- define "packline.caMount" -}}
{{- if .Values.kafka.caConfigMap }}
volumeMounts:
  - { name: kafka-ca, mountPath: /etc/packline/kafka-ca, readOnly: true }
{{- end }}
{{- end }}

{{- define "packline.caVolume" -}}
{{- if .Values.kafka.caConfigMap }}
volumes:
  - name: kafka-ca
    configMap: { name: {{ .Values.kafka.caConfigMap }} }
{{- end }}
{{- end }}

{{- define "packline.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: { drop: [ALL] }
{{- end }}
