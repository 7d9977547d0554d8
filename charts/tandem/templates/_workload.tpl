{{/*
One long-running Tandem gRPC workload: Deployment + Service (+ HPA and PDB in their own
templates). Argument: (dict "root" $ "component" NAME "values" .Values.NAME "args" LIST
"env" YAML-STRING "port" PORT "sharedArtifacts" BOOL), optionally with "indexVolume" (the pod
serves the live index, so it keeps the PVC in object-store mode), "resources" (replaces
.values.resources, e.g. with GPUs added) and "noSurge" (for pods that cannot surge). Every
container gets the restricted security context, resource requests and native gRPC probes
from _helpers.tpl, so they cannot drift between services.
*/}}
{{- define "tandem.grpcDeployment" -}}
{{- $root := .root }}
{{- $v := .values }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "tandem.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tandem.componentLabels" . | trim | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "tandem.componentSelectorLabels" . | trim | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      {{- if .noSurge }}
      # No spare GPU to surge onto: replace pods one at a time instead.
      maxSurge: 0
      maxUnavailable: 1
      {{- else }}
      maxSurge: 1
      maxUnavailable: 0
      {{- end }}
  template:
    metadata:
      labels:
        {{- include "tandem.componentLabels" . | trim | nindent 8 }}
      annotations:
        # Roll the pods when the shared configuration changes.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "tandem.podCommon" (dict "root" $root "values" $v) | trim | nindent 6 }}
      # Long enough for the health service to report NOT_SERVING and in-flight calls to drain.
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ .component }}
          image: {{ include "tandem.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
            {{- include "tandem.serveCommonArgs" (dict "root" $root "component" .component) | trim | nindent 12 }}
            {{- with $v.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: grpc
              containerPort: {{ .port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
            {{- if $root.Values.tls.enabled }}
            - name: health
              containerPort: {{ $root.Values.probes.healthPort }}
              protocol: TCP
            {{- end }}
          envFrom:
            {{- include "tandem.envFrom" $root | trim | nindent 12 }}
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $root.Values.config.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "tandem.grpcProbes" (dict "probes" $root.Values.probes "port" (ternary $root.Values.probes.healthPort .port $root.Values.tls.enabled)) | trim | nindent 10 }}
          resources:
            {{- toYaml (default $v.resources .resources) | nindent 12 }}
          securityContext:
            {{- include "tandem.containerSecurityContext" $root | trim | nindent 12 }}
          volumeMounts:
            {{- include "tandem.volumeMounts" $root | trim | nindent 12 }}
      volumes:
        {{- include "tandem.volumes" (dict "root" $root "shared" .sharedArtifacts "index" .indexVolume) | trim | nindent 8 }}
{{- end }}

{{/* The ClusterIP (or configured) Service of one gRPC workload. */}}
{{- define "tandem.grpcService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "tandem.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tandem.componentLabels" . | trim | nindent 4 }}
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ default "ClusterIP" .type }}
  selector:
    {{- include "tandem.componentSelectorLabels" . | trim | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ .root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end }}
