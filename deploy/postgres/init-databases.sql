-- Docker users only (docker-compose.yml): one database per service, as deploy/postgres/postgres.sh
-- creates them for the local scripts.
CREATE DATABASE packline_calendar;
CREATE DATABASE packline_invoicing;
CREATE DATABASE packline_matcher;
