{{/*
Names, labels and shared pod fragments. Every Tandem workload is rendered from these, so
the restricted security context, probes and volumes cannot drift between services.
*/}}

{{/* Chart name, overridable. */}}
{{- define "tandem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified base name; component names append "-<component>" (kept under 63 chars). */}}
{{- define "tandem.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of one component's objects: (dict "root" $ "component" "gateway"); a "shard" key
(generative.shards > 1) appends "-<shard>". */}}
{{- define "tandem.componentName" -}}
{{- printf "%s-%s" (include "tandem.fullname" .root) .component }}{{ if hasKey . "shard" }}-{{ .shard }}{{ end }}
{{- end }}

{{- define "tandem.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that identify the release's pods; stable across upgrades (used in selectors). */}}
{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tandem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "tandem.labels" -}}
helm.sh/chart: {{ include "tandem.chart" . }}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tandem
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway"). */}}
{{- define "tandem.componentSelectorLabels" -}}
{{ include "tandem.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- if hasKey . "shard" }}
tandem.io/shard: {{ .shard | quote }}
{{- end }}
{{- end }}

{{/* All labels of one component's objects. */}}
{{- define "tandem.componentLabels" -}}
{{ include "tandem.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- if hasKey . "shard" }}
tandem.io/shard: {{ .shard | quote }}
{{- end }}
{{- end }}

{{- define "tandem.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tandem.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference; a digest pins it and wins over the tag. */}}
{{- define "tandem.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "tandem.authSecretName" -}}
{{- default (printf "%s-auth" (include "tandem.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* The TLS Secret: tls.existingSecret, else the chart's <fullname>-tls (generated or cert-manager's). */}}
{{- define "tandem.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "tandem.fullname" .)) }}
{{- end }}

{{/* Names the chart's certificate covers: every component's Service (short, namespaced, .svc,
cluster domain), localhost (kubectl port-forward) and tls.dnsNames. One name per line. */}}
{{- define "tandem.tlsDnsNames" -}}
{{- $ns := .Release.Namespace }}
{{- $names := list }}
{{- range $c := list "gateway" "sparse" "generative" "intent" }}
{{- $names = append $names (include "tandem.componentName" (dict "root" $ "component" $c)) }}
{{- end }}
{{- $shards := int (default 1 .Values.generative.shards) }}
{{- if gt $shards 1 }}
{{- range $i := until $shards }}
{{- $names = append $names (include "tandem.componentName" (dict "root" $ "component" "generative" "shard" $i)) }}
{{- end }}
{{- end }}
{{- range $n := $names }}
{{ $n }}
{{ printf "%s.%s" $n $ns }}
{{ printf "%s.%s.svc" $n $ns }}
{{ printf "%s.%s.svc.cluster.local" $n $ns }}
{{- end }}
localhost
{{- range .Values.tls.dnsNames }}
{{ . }}
{{- end }}
{{- end }}

{{- define "tandem.artifactsClaimName" -}}
{{- default (printf "%s-artifacts" (include "tandem.fullname" .)) .Values.artifacts.persistence.existingClaim }}
{{- end }}

{{/* A path on the artifact volume: absolute paths pass through. Argument: (dict "root" $ "path" P). */}}
{{/* Absolute path of the live Lucene index: ingest writes it, sparse serves it (one value: sparse.indexDir). */}}
{{- define "tandem.indexPath" -}}
{{- include "tandem.artifactPath" (dict "root" .root "path" .root.Values.sparse.indexDir) }}
{{- end }}

{{- define "tandem.artifactPath" -}}
{{- if isAbs .path }}{{ .path }}{{ else }}{{ printf "%s/%s" .root.Values.artifacts.mountPath .path }}{{ end }}
{{- end }}

{{/* The artifact registry: artifacts.uri, else `registry/` on the artifact volume. */}}
{{- define "tandem.registryUri" -}}
{{- .Values.artifacts.uri | default (printf "%s/registry" .Values.artifacts.mountPath) }}
{{- end }}

{{/* "true" when the gateway reads the registry: `--fusion auto` beside a generative service that follows it. */}}
{{- define "tandem.gatewayReadsRegistry" -}}
{{- if and .Values.generative.enabled .Values.generative.registry.enabled (eq .Values.gateway.fusion "auto") }}true{{ end }}
{{- end }}

{{/* In-cluster address of a retriever/intent service: (dict "root" $ "component" "sparse" "port" 50052). */}}
{{- define "tandem.serviceAddress" -}}
{{- printf "%s.%s.svc:%v" (include "tandem.componentName" .) .root.Release.Namespace .port }}
{{- end }}

{{/* Restricted pod-level security context (Pod Security Standard "restricted"). */}}
{{- define "tandem.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Restricted container-level security context. */}}
{{- define "tandem.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Native gRPC probes against grpc.health.v1 (service "" = the whole server). A startup probe
covers loading indexes and models, so liveness can stay strict afterwards. Kubelet cannot
speak TLS, so with TLS on the caller passes the plaintext health-only port.
Argument: (dict "probes" .Values.probes "port" <port that serves grpc.health.v1 in plaintext>).
*/}}
{{- define "tandem.grpcProbes" -}}
{{- $p := .probes }}
{{- $port := .port }}
startupProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: 10
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.startupFailureThreshold }}
livenessProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
readinessProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
{{- end }}

{{/*
Arguments every `tandem serve` command shares: bind address, logs, metrics, tracing, auth, TLS
and (with TLS) the plaintext health-only port for kubelet. Auth has roles: the gateway takes
client tokens (search) and admin tokens (AdminService, debug); every other service takes the
internal token only. Client certificates (mTLS) are
required on the gateway only: it is the one port clients reach, and the gateway's calls to
the retrievers carry the internal bearer token over TLS instead.
Argument: (dict "root" $ "component" NAME).
*/}}
{{- define "tandem.serveCommonArgs" -}}
{{- $v := .root.Values }}
- --host=0.0.0.0
- --log-level={{ upper $v.config.logLevel }}
- --metrics-port={{ $v.metrics.port }}
{{- if $v.config.tracing.enabled }}
- --tracing
{{- end }}
{{- if $v.auth.enabled }}
{{- if eq .component "gateway" }}
{{- /* Roles: client tokens may search; only admin tokens may call AdminService or ask for debug. */}}
- --auth-token-file=/etc/tandem/auth/{{ $v.auth.tokensKey }}
- --admin-token-file=/etc/tandem/auth/{{ $v.auth.adminTokensKey }}
{{- else }}
{{- /* Retrievers and intent accept the internal token only (the gateway's), read from its file so a rotation applies without a restart. */}}
- --auth-token-file=/etc/tandem/auth/{{ $v.auth.internalTokenKey }}
{{- end }}
{{- end }}
{{- if and (eq .component "gateway") $v.gateway.reflection }}
- --reflection
{{- end }}
{{- if $v.tls.enabled }}
- --health-port={{ $v.probes.healthPort }}
- --tls-cert=/etc/tandem/tls/tls.crt
- --tls-key=/etc/tandem/tls/tls.key
{{- if and $v.tls.clientAuth (eq .component "gateway") }}
- --tls-client-ca=/etc/tandem/tls/ca.crt
{{- end }}
{{- end }}
{{- end }}

{{/*
The internal bearer token (gateway -> retrievers), from the auth Secret: the gateway sends it
(TANDEM_DOWNSTREAM_TOKEN); the retrievers read it from the mounted Secret file (serveCommonArgs).
Argument: (dict "root" $ "name" ENV-NAME).
*/}}
{{- define "tandem.internalTokenEnv" -}}
{{- if .root.Values.auth.enabled }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "tandem.authSecretName" .root }}
      key: {{ .root.Values.auth.internalTokenKey }}
{{- end }}
{{- end }}

{{/* envFrom of every Tandem container: the shared ConfigMap and object-store credentials. */}}
{{- define "tandem.envFrom" -}}
- configMapRef:
    name: {{ include "tandem.fullname" . }}
{{- with .Values.artifacts.objectStoreSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}

{{/* Redis URL variables; only the gateway uses the cache. */}}
{{- define "tandem.redisEnv" -}}
{{- $r := .Values.redis }}
{{- if eq $r.mode "inCluster" }}
- name: TANDEM_REDIS_URL
  value: {{ printf "redis://%s.%s.svc:6379/0" (include "tandem.componentName" (dict "root" . "component" "redis")) .Release.Namespace | quote }}
{{- else if eq $r.mode "external" }}
{{- $e := $r.external }}
{{- if $e.urlKey }}
- name: TANDEM_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.external.existingSecret is required with redis.external.urlKey" $e.existingSecret }}
      key: {{ $e.urlKey }}
{{- else }}
{{- $scheme := ternary "rediss" "redis" $e.tls }}
{{- $hostPort := printf "%s:%v/%v" (required "redis.external.host is required when redis.mode is external" $e.host) $e.port $e.db }}
{{- if $e.existingSecret }}
- name: TANDEM_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $e.existingSecret }}
      key: {{ $e.passwordKey }}
{{- /* Kubernetes expands $(VAR) from earlier variables, so the password never sits in the chart or the ConfigMap. */}}
- name: TANDEM_REDIS_URL
  value: {{ printf "%s://%s:$(TANDEM_REDIS_PASSWORD)@%s" $scheme $e.username $hostPort | quote }}
{{- else }}
- name: TANDEM_REDIS_URL
  value: {{ printf "%s://%s" $scheme $hostPort | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Volumes of a Tandem pod: writable /tmp, the artifact volume, auth tokens and TLS material.
Argument: (dict "root" $ "shared" BOOL "index" BOOL): only pods that read or write indexes
and models (sparse, generative, ingest) mount the shared PVC; the others get an emptyDir
TANDEM_HOME, which keeps ReadWriteOnce claims usable. In object-store mode (artifacts.uri)
models come from the object store, but the pods holding the live index ("index": ingest's
catalog store and Lucene index, and sparse, which serves that index) still mount the PVC:
an emptyDir there would drop every applied event on a restart (validate.yaml requires it).
*/}}
{{- define "tandem.volumes" -}}
{{- $v := .root.Values }}
- name: tmp
  emptyDir: {}
- name: artifacts
  {{- if and .shared $v.artifacts.persistence.enabled (or (not $v.artifacts.uri) .index) }}
  persistentVolumeClaim:
    claimName: {{ include "tandem.artifactsClaimName" .root }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- if $v.auth.enabled }}
- name: auth
  secret:
    secretName: {{ include "tandem.authSecretName" .root }}
    defaultMode: 0440
{{- end }}
{{- if $v.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "tandem.tlsSecretName" .root }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "tandem.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: artifacts
  mountPath: {{ .Values.artifacts.mountPath }}
{{- if .Values.auth.enabled }}
- name: auth
  mountPath: /etc/tandem/auth
  readOnly: true
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/tandem/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Scheduling and pod-level fields shared by every Tandem pod: (dict "root" $ "values" .Values.<component>). */}}
{{- define "tandem.podCommon" -}}
serviceAccountName: {{ include "tandem.serviceAccountName" .root }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "tandem.podSecurityContext" .root | trim | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
