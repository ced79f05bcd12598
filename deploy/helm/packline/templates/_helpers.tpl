{{/*
Every object's name starts with the release's (or fullnameOverride): two releases share a
namespace without a clash. Release "packline" keeps the short names the docs use
(packline-calendar, packline-config, packline-secrets). 45 characters leave room for the longest
suffix ("-invoicing-migrate") within the 63 a Job's name may have.
*/}}
{{- define "packline.fullname" -}}
{{- $name := .Values.fullnameOverride | default .Release.Name -}}
{{- if gt (len $name) 45 -}}
{{- fail (printf "the release name (or fullnameOverride) %q is longer than 45 characters: the Jobs' names would pass Kubernetes' 63" $name) -}}
{{- end -}}
{{- $name -}}
{{- end }}

{{/* The Secret with the services' secrets: created outside the chart unless secrets.create. */}}
{{- define "packline.secretName" -}}
{{- .Values.secrets.name | default (printf "%s-secrets" (include "packline.fullname" .)) -}}
{{- end }}

{{/*
Names of the ConfigMap and Secret a pod reads. The Deployments read the release's own; the hook
Jobs read copies made by an earlier hook of the same phase ("packline.hookConfigName"), because
Helm creates a release's regular objects only after its pre-install hooks have succeeded.
*/}}
{{- define "packline.configName" -}}
{{- printf "%s-config" (include "packline.fullname" .) -}}
{{- end }}

{{- define "packline.hookConfigName" -}}
{{- printf "%s-hook-config" (include "packline.fullname" .) -}}
{{- end }}

{{- define "packline.hookSecretName" -}}
{{- printf "%s-hook-secrets" (include "packline.fullname" .) -}}
{{- end }}

{{/* The settings every process shares (not secret): the ConfigMap's data and its hook copy's. */}}
{{- define "packline.configData" -}}
PACKLINE_KAFKA_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
PACKLINE_KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
PACKLINE_KAFKA_SASL_MECHANISM: {{ .Values.kafka.saslMechanism | quote }}
{{- if .Values.kafka.caConfigMap }}
PACKLINE_KAFKA_SSL_CA_FILE: /etc/packline/kafka-ca/ca.pem
{{- end }}
PACKLINE_TOPIC_PREFIX: {{ .Values.topicPrefix | quote }}
PACKLINE_PARTITIONS: {{ .Values.kafka.partitions | quote }}
PACKLINE_LOG_LEVEL: {{ .Values.logLevel | quote }}
PACKLINE_LOG_FORMAT: json
PACKLINE_HTTP_HOST: 0.0.0.0
{{- end }}

{{/* Labels of the objects that belong to no one service. */}}
{{- define "packline.commonLabels" -}}
app.kubernetes.io/part-of: packline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

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

{{/*
The environment of a Packline process: the ConfigMap, then secrets one key at a time. With
.hook, the copies a hook Job may read (see "packline.hookConfigName").
*/}}
{{- define "packline.env" -}}
{{- $config := include "packline.configName" .root }}
{{- $secret := include "packline.secretName" .root }}
{{- if .hook }}
{{- $config = include "packline.hookConfigName" .root }}
{{- if .root.Values.secrets.create }}
{{- $secret = include "packline.hookSecretName" .root }}
{{- end }}
{{- end }}
envFrom:
  - configMapRef:
      name: {{ $config }}
env:
  - name: PACKLINE_DATABASE_URL
    valueFrom:
      secretKeyRef: { name: {{ $secret }}, key: {{ .name }}-database-url }
  - name: PACKLINE_STAFF_TOKENS
    valueFrom:
      secretKeyRef: { name: {{ $secret }}, key: staff-tokens }
  {{- if hasPrefix "SASL_" .root.Values.kafka.securityProtocol }}
  {{- /* A service runs as its own principal (R17); the hook Jobs (topics) as the admin user. */}}
  {{- $user := "kafka-sasl" }}
  {{- if and .root.Values.kafka.servicePrincipals (not .hook) }}
  {{- $user = printf "%s-kafka-sasl" .name }}
  {{- end }}
  - name: PACKLINE_KAFKA_SASL_USERNAME
    valueFrom:
      secretKeyRef: { name: {{ $secret }}, key: {{ $user }}-username }
  - name: PACKLINE_KAFKA_SASL_PASSWORD
    valueFrom:
      secretKeyRef: { name: {{ $secret }}, key: {{ $user }}-password }
  {{- end }}
  {{- if eq .name "invoicing" }}
  - name: PACKLINE_CALENDAR_TOKEN
    valueFrom:
      secretKeyRef: { name: {{ $secret }}, key: calendar-token }
  {{- end }}
  {{- if and (eq .name "invoicing") (not (hasKey (.service.env | default dict) "PACKLINE_CALENDAR_URL")) }}
  - name: PACKLINE_CALENDAR_URL
    value: {{ printf "http://%s-calendar:%v" (include "packline.fullname" .root) .root.Values.services.calendar.port | quote }}
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
