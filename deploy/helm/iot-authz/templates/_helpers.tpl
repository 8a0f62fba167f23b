{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "iot-authz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name, used for every object and so for the Service's DNS name
(<fullname>.<namespace>.svc.cluster.local): the release name when it already contains the
chart name (release "iot-authz" gives "iot-authz"), else "<release>-iot-authz".
*/}}
{{- define "iot-authz.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "iot-authz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "iot-authz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iot-authz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "iot-authz.labels" -}}
helm.sh/chart: {{ include "iot-authz.chart" . }}
{{ include "iot-authz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: authorization
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "iot-authz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "iot-authz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "iot-authz.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Service's cluster DNS name, as Istio's extensionProviders and Envoy need it. */}}
{{- define "iot-authz.serviceHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "iot-authz.fullname" .) .Release.Namespace }}
{{- end }}

{{/* Fixed paths and ports ------------------------------------------------------------ */}}

{{/* The policy directory: the ConfigMap volume's mount point and the --policy argument. */}}
{{- define "iot-authz.policyDir" -}}/etc/iot-authz/policy{{- end }}
{{- define "iot-authz.bundleTokenDir" -}}/etc/iot-authz/bundle-token{{- end }}
{{- define "iot-authz.tlsDir" -}}/etc/iot-authz/tls{{- end }}
{{- define "iot-authz.storeTlsDir" -}}/etc/iot-authz/etcd-tls{{- end }}
{{- define "iot-authz.storeAuthDir" -}}/etc/iot-authz/etcd-auth{{- end }}
{{/* The container listens where the args say; the Service maps its ports onto these. */}}
{{- define "iot-authz.grpcContainerPort" -}}50051{{- end }}
{{- define "iot-authz.httpContainerPort" -}}8181{{- end }}

{{/* Policy source ----------------------------------------------------------------------- */}}

{{/*
Which policy source the release uses, after checking that at most one is given:
  bundle    --policy-url
  existing  an existing ConfigMap mounted at the policy directory
  documents a ConfigMap rendered from policy.documents, mounted at the policy directory
  denyAll   nothing configured: a rendered ConfigMap with a deny-all document
  demo      demo: true and nothing configured: no --policy, the embedded demo
*/}}
{{- define "iot-authz.policyMode" -}}
{{- $given := list }}
{{- if .Values.policy.documents }}{{ $given = append $given "policy.documents" }}{{ end }}
{{- if .Values.policy.existingConfigMap }}{{ $given = append $given "policy.existingConfigMap" }}{{ end }}
{{- if .Values.bundle.url }}{{ $given = append $given "bundle.url" }}{{ end }}
{{- if gt (len $given) 1 }}
{{- fail (printf "iot-authz: give only one policy source, not %s" (join " and " $given)) }}
{{- end }}
{{- if and .Values.demo (gt (len $given) 0) }}
{{- fail (printf "iot-authz: demo: true serves the embedded demo policy and cannot be combined with %s" (first $given)) }}
{{- end }}
{{- if .Values.bundle.tokenSecret.name }}
{{- if not .Values.bundle.url }}
{{- fail "iot-authz: bundle.tokenSecret.name needs bundle.url" }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- if not .Values.tls.secretName }}
{{- fail "iot-authz: tls.enabled needs tls.secretName" }}
{{- end }}
{{- end }}
{{- if .Values.bundle.url }}bundle
{{- else if .Values.policy.existingConfigMap }}existing
{{- else if .Values.policy.documents }}documents
{{- else if .Values.demo }}demo
{{- else }}denyAll
{{- end }}
{{- end }}

{{/* Does the chart render the policy ConfigMap itself? */}}
{{- define "iot-authz.rendersConfigMap" -}}
{{- $mode := include "iot-authz.policyMode" . }}
{{- if or (eq $mode "documents") (eq $mode "denyAll") }}true{{ end }}
{{- end }}

{{/* Is a policy ConfigMap (rendered or existing) mounted? */}}
{{- define "iot-authz.mountsConfigMap" -}}
{{- $mode := include "iot-authz.policyMode" . }}
{{- if or (eq $mode "documents") (eq $mode "denyAll") (eq $mode "existing") }}true{{ end }}
{{- end }}

{{- define "iot-authz.policyConfigMapName" -}}
{{- if .Values.policy.existingConfigMap }}
{{- .Values.policy.existingConfigMap }}
{{- else }}
{{- printf "%s-policy" (include "iot-authz.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The policy documents the chart renders (the deny-all document when none is given). */}}
{{- define "iot-authz.policyDocuments" -}}
{{- if .Values.policy.documents }}
{{- toYaml .Values.policy.documents }}
{{- else -}}
00-deny-all.yaml: |
  # No policy was configured (policy.documents, policy.existingConfigMap, bundle.url).
  # This document defines no routes, so iot-authz denies every request (noRoute, 403).
  version: 1
{{- end }}
{{- end }}

{{/* The `iot-authz serve` arguments ----------------------------------------------------- */}}
{{- define "iot-authz.args" -}}
{{- $mode := include "iot-authz.policyMode" . -}}
- serve
- --grpc-addr
- 0.0.0.0:{{ include "iot-authz.grpcContainerPort" . }}
- --http-addr
- 0.0.0.0:{{ include "iot-authz.httpContainerPort" . }}
- --log-format
- {{ .Values.server.logFormat | quote }}
{{- if eq $mode "bundle" }}
- --policy-url
- {{ .Values.bundle.url | quote }}
{{- if not (kindIs "invalid" .Values.bundle.intervalSeconds) }}
- --policy-url-interval-seconds
- {{ .Values.bundle.intervalSeconds | int64 | quote }}
{{- end }}
{{- if .Values.bundle.tokenSecret.name }}
- --policy-url-token-file
- {{ printf "%s/token" (include "iot-authz.bundleTokenDir" .) }}
{{- end }}
{{- else if ne $mode "demo" }}
- --policy
- {{ include "iot-authz.policyDir" . }}
{{- if not (kindIs "invalid" .Values.policy.pollSeconds) }}
- --policy-poll-seconds
- {{ .Values.policy.pollSeconds | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .Values.policy.debounceMs) }}
- --policy-debounce-ms
- {{ .Values.policy.debounceMs | int64 | quote }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" .Values.policy.maxBytes) }}
- --max-policy-bytes
- {{ .Values.policy.maxBytes | int64 | quote }}
{{- end }}
{{- if .Values.store.enabled }}
{{- if not .Values.store.endpoints }}
{{- fail "store.enabled needs store.endpoints (etcd client URLs)" }}
{{- end }}
- --etcd-endpoints
- {{ join "," .Values.store.endpoints | quote }}
- --etcd-prefix
- {{ .Values.store.prefix | quote }}
{{- if not (kindIs "invalid" .Values.store.maxValueBytes) }}
- --etcd-max-value-bytes
- {{ .Values.store.maxValueBytes | int64 | quote }}
{{- end }}
{{- if .Values.store.tls.secretName }}
- --etcd-ca
- {{ printf "%s/ca.crt" (include "iot-authz.storeTlsDir" .) }}
{{- if .Values.store.tls.clientCert }}
- --etcd-cert
- {{ printf "%s/tls.crt" (include "iot-authz.storeTlsDir" .) }}
- --etcd-key
- {{ printf "%s/tls.key" (include "iot-authz.storeTlsDir" .) }}
{{- end }}
{{- end }}
{{- if .Values.store.auth.username }}
{{- if not .Values.store.auth.existingSecret }}
{{- fail "store.auth.username needs store.auth.existingSecret (a Secret holding the etcd password)" }}
{{- end }}
- --etcd-username
- {{ .Values.store.auth.username | quote }}
- --etcd-password-file
- {{ printf "%s/password" (include "iot-authz.storeAuthDir" .) }}
{{- end }}
{{- end }}
- --decision-cache-size
- {{ .Values.decisionCache.size | int64 | quote }}
- --decision-cache-ttl-seconds
- {{ .Values.decisionCache.ttlSeconds | int64 | quote }}
{{- if .Values.decisionLog.enabled }}
- --decision-log
- "-"
- --decision-log-sample
- {{ .Values.decisionLog.sample | toString | quote }}
{{- end }}
{{- if .Values.shadow }}
- --shadow
{{- end }}
{{- with .Values.server }}
{{- if not (kindIs "invalid" .maxMessageBytes) }}
- --max-message-bytes
- {{ .maxMessageBytes | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .requestTimeoutMs) }}
- --request-timeout-ms
- {{ .requestTimeoutMs | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .concurrencyPerConnection) }}
- --concurrency-per-connection
- {{ .concurrencyPerConnection | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .maxConcurrentStreams) }}
- --max-concurrent-streams
- {{ .maxConcurrentStreams | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .maxConcurrentQueries) }}
- --max-concurrent-queries
- {{ .maxConcurrentQueries | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .shutdownDelayMs) }}
- --shutdown-delay-ms
- {{ .shutdownDelayMs | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" .shutdownGraceMs) }}
- --shutdown-grace-ms
- {{ .shutdownGraceMs | int64 | quote }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}
- --tls-cert
- {{ printf "%s/tls.crt" (include "iot-authz.tlsDir" .) }}
- --tls-key
- {{ printf "%s/tls.key" (include "iot-authz.tlsDir" .) }}
{{- if .Values.tls.requireClientCert }}
- --tls-client-ca
- {{ printf "%s/ca.crt" (include "iot-authz.tlsDir" .) }}
{{- end }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
