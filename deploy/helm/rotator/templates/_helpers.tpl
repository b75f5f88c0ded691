{{/* rotator's names, labels and the pieces the Deployment and the CronJob share. */}}

{{- define "rotator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* the release's full name: rotator for a release named rotator (the kustomize base's names), else RELEASE-rotator */}}
{{- define "rotator.fullname" -}}
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

{{/* a CronJob's name may have 52 characters at most */}}
{{- define "rotator.cronJobName" -}}
{{- printf "%s-once" (include "rotator.fullname" . | trunc 47 | trimSuffix "-") }}
{{- end }}

{{- define "rotator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rotator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rotator.configMapName" -}}
{{- default (printf "%s-config" (include "rotator.fullname" .)) .Values.existingConfigMap }}
{{- end }}

{{/* every object's labels: the kustomize base's (name, part-of) and Helm's */}}
{{- define "rotator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "rotator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rotator
{{- end }}

{{- define "rotator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rotator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* a pod template's labels; dict: ctx, component */}}
{{- define "rotator.podLabels" -}}
{{- $ctx := .ctx }}
{{- $labels := dict "app.kubernetes.io/name" (include "rotator.name" $ctx) "app.kubernetes.io/instance" $ctx.Release.Name "app.kubernetes.io/component" .component "app.kubernetes.io/part-of" "rotator" }}
{{- if $ctx.Values.workloadIdentity.aks.clientId }}
{{- $_ := set $labels "azure.workload.identity/use" "true" }}
{{- end }}
{{- toYaml (merge $labels $ctx.Values.podLabels) }}
{{- end }}

{{- define "rotator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* rotator.yaml as the ConfigMap carries it: the text as given, or the map as YAML */}}
{{- define "rotator.configText" -}}
{{- if not .Values.config }}
{{- .Files.Get "files/rotator.yaml" }}
{{- else if kindIs "string" .Values.config }}
{{- .Values.config }}
{{- else }}
{{- toYaml .Values.config }}
{{- end }}
{{- end }}

{{- define "rotator.ha" -}}
{{- if and (eq .Values.mode "daemon") (gt (int .Values.daemon.replicas) 1) }}true{{ end }}
{{- end }}

{{/* the API token: the daemon's pods for leader election; both pod templates for rbac.roles or automountToken */}}
{{- define "rotator.token" -}}
{{- if or (include "rotator.ha" .) .Values.rbac.roles .Values.serviceAccount.automountToken }}true{{ else }}false{{ end }}
{{- end }}
{{- define "rotator.cronJobToken" -}}
{{- if or .Values.rbac.roles .Values.serviceAccount.automountToken }}true{{ else }}false{{ end }}
{{- end }}

{{/* what the chart can check of the values before Kubernetes sees them (the schema checks the types) */}}
{{- define "rotator.validate" -}}
{{- if not .Values.existingConfigMap }}
{{- $cfg := include "rotator.configText" . | fromYaml }}
{{- if hasKey $cfg "Error" }}
{{- fail (printf "config is not YAML: %s" $cfg.Error) }}
{{- end }}
{{- if eq .Values.mode "daemon" }}
{{- $listen := dig "http" "listen" "" $cfg | toString }}
{{- if not (hasSuffix (printf ":%v" .Values.daemon.port) $listen) }}
{{- fail (printf "mode daemon: the probes and the Service use port %v, so the config needs `http: {listen: \"0.0.0.0:%v\"}` (it has %q)" .Values.daemon.port .Values.daemon.port $listen) }}
{{- end }}
{{- end }}
{{- if include "rotator.ha" . }}
{{- $enabled := dig "leader_election" "enabled" false $cfg | toString }}
{{- if not (or (eq $enabled "true") (contains "ROTATOR_LEADER_ELECTION" $enabled)) }}
{{- fail (printf "daemon.replicas is %v: without leader election every replica runs passes. Set `leader_election: {enabled: ${ROTATOR_LEADER_ELECTION:-false}}` (or true) in the config" .Values.daemon.replicas) }}
{{- end }}
{{- $lease := dig "leader_election" "lease_name" "rotator" $cfg | toString }}
{{- if ne $lease .Values.daemon.leaseName }}
{{- fail (printf "the config's leader_election.lease_name is %q but daemon.leaseName (the Role's Lease) is %q: set them equal" $lease .Values.daemon.leaseName) }}
{{- end }}
{{- end }}
{{- end }}
{{- $wi := .Values.workloadIdentity }}
{{- if and (not .Values.serviceAccount.create) (or $wi.eks.roleArn $wi.aks.clientId $wi.aks.tenantId $wi.gke.serviceAccount) }}
{{- fail "workloadIdentity annotates the ServiceAccount the chart creates: with serviceAccount.create false, annotate your own ServiceAccount instead" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (ne .Values.mode "daemon") }}
{{- fail "serviceMonitor.enabled needs mode daemon: a CronJob has no /metrics to scrape (push to a Pushgateway with `metrics: {pushgateway: ...}` in the config)" }}
{{- end }}
{{- end }}

{{/* the pod spec of both workloads; dict: ctx, component (daemon | cronjob), token ("true" | "false") */}}
{{- define "rotator.podSpec" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- $daemon := eq .component "daemon" }}
{{- if not $daemon }}
restartPolicy: Never
{{- end }}
serviceAccountName: {{ include "rotator.serviceAccountName" $ctx }}
automountServiceAccountToken: {{ .token }}
enableServiceLinks: false
terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- if $v.affinity }}
affinity:
  {{- toYaml $v.affinity | nindent 2 }}
{{- else if and $daemon (include "rotator.ha" $ctx) }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "rotator.selectorLabels" $ctx | nindent 14 }}
              app.kubernetes.io/component: daemon
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: rotator
    image: {{ include "rotator.image" $ctx }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    args:
      - {{ ternary "run" "once" $daemon }}
      {{- range $v.extraArgs }}
      - {{ . | quote }}
      {{- end }}
    env:
      {{- if and $daemon (include "rotator.ha" $ctx) }}
      - name: ROTATOR_LEADER_ELECTION     # leader_election.enabled in the config
        value: "true"
      {{- end }}
      {{- if and (not $daemon) (gt (int $v.cronjob.shards) 1) }}
      - name: ROTATOR_SHARD_COUNT         # with JOB_COMPLETION_INDEX: this pod's shard
        value: {{ $v.cronjob.shards | quote }}
      {{- end }}
      - name: ROTATOR_CONFIG
        value: /etc/rotator/rotator.yaml
      {{- if $v.managementKey.secretName }}
      - name: MOMENTO_MANAGEMENT_KEY      # issuer.management_key: {env: MOMENTO_MANAGEMENT_KEY}
        valueFrom:
          secretKeyRef:
            name: {{ $v.managementKey.secretName }}
            key: {{ $v.managementKey.secretKey }}
      {{- end }}
      {{- with $v.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- if $daemon }}
    ports:
      - name: metrics
        containerPort: {{ $v.daemon.port }}
        protocol: TCP
    startupProbe:             # imports and config checks take a second or two on a cold node
      httpGet:
        path: /healthz
        port: metrics
      periodSeconds: 2
      timeoutSeconds: 3
      failureThreshold: 30
    livenessProbe:            # the scheduler is alive: a wedged daemon is restarted
      httpGet:
        path: /healthz
        port: metrics
      periodSeconds: 20
      timeoutSeconds: 5
      failureThreshold: 3
    readinessProbe:           # passes are succeeding: alert on a pod that stays unready
      httpGet:
        path: /readyz
        port: metrics
      periodSeconds: 15
      timeoutSeconds: 5
      failureThreshold: 2
    {{- end }}
    resources:
      {{- toYaml (ternary $v.daemon.resources $v.cronjob.resources $daemon) | nindent 6 }}
    securityContext:
      {{- toYaml $v.securityContext | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/rotator
        readOnly: true
      {{- with $v.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "rotator.configMapName" $ctx }}
  {{- with $v.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* the pod template's annotations; dict: ctx, component. The daemon rolls on a new config (checksum/config); each
CronJob run reads the ConfigMap afresh */}}
{{- define "rotator.podAnnotations" -}}
{{- $ctx := .ctx }}
{{- $ann := dict }}
{{- if and (eq .component "daemon") (not $ctx.Values.existingConfigMap) }}
{{- $_ := set $ann "checksum/config" (include "rotator.configText" $ctx | sha256sum) }}
{{- end }}
{{- if and (eq .component "daemon") $ctx.Values.daemon.scrapeAnnotations }}
{{- $_ := set $ann "prometheus.io/scrape" "true" }}
{{- $_ := set $ann "prometheus.io/port" ($ctx.Values.daemon.port | toString) }}
{{- $_ := set $ann "prometheus.io/path" "/metrics" }}
{{- end }}
{{- toYaml (merge $ann $ctx.Values.podAnnotations) }}
{{- end }}
