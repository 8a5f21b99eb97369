{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "agentstack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. A release named like the chart is not repeated.
*/}}
{{- define "agentstack.fullname" -}}
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

{{- define "agentstack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object. Components: server, redis, test.
*/}}
{{- define "agentstack.labels" -}}
helm.sh/chart: {{ include "agentstack.chart" . }}
{{ include "agentstack.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentstack
{{- end }}

{{- define "agentstack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentstack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The server's selector: the component label keeps the bundled Redis and the test pod out
of the Service, the PDB and the HPA's pods.
*/}}
{{- define "agentstack.serverSelectorLabels" -}}
{{ include "agentstack.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "agentstack.redisSelectorLabels" -}}
{{ include "agentstack.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "agentstack.testSelectorLabels" -}}
{{ include "agentstack.selectorLabels" . }}
app.kubernetes.io/component: test
{{- end }}

{{- define "agentstack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentstack.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The server image: digest, else tag, else "<appVersion>-<engine.device>".
*/}}
{{- define "agentstack.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default (printf "%s-%s" .Chart.AppVersion .Values.engine.device) $image.tag) }}
{{- end }}
{{- end }}

{{/*
Paths inside the server container.
*/}}
{{- define "agentstack.configDir" -}}/etc/agentstack{{- end }}
{{- define "agentstack.cacheDir" -}}/var/cache/agentstack{{- end }}
{{- define "agentstack.secretsDir" -}}/var/run/secrets/agentstack{{- end }}

{{/*
The directory holding the model and the adapters: in the image, or on the mounted volume.
*/}}
{{- define "agentstack.artifactsRoot" -}}
{{- $a := .Values.artifacts }}
{{- trimSuffix "/" (ternary $a.imageRoot $a.mountPath (eq $a.source "image")) }}
{{- end }}

{{- define "agentstack.modelDir" -}}
{{- with .Values.artifacts.modelPath }}
{{- printf "%s/%s" (include "agentstack.artifactsRoot" $) . }}
{{- end }}
{{- end }}

{{- define "agentstack.adaptersDir" -}}
{{- printf "%s/%s" (include "agentstack.artifactsRoot" .) .Values.artifacts.adaptersPath }}
{{- end }}

{{/*
The service's YAML config file (AGENTSTACK_CONFIG). Keys are `Settings` fields; the
service refuses unknown ones. extraConfig adds fields; it cannot move what the probes,
mounts and Service rely on.
*/}}
{{- define "agentstack.configFile" -}}
{{- $e := .Values.engine }}
{{- $config := dict
  "host" "0.0.0.0"
  "port" 8000
  "cache_dir" (include "agentstack.cacheDir" .)
  "served_model_name" .Values.artifacts.servedModelName
  "roles_file" (printf "%s/roles.yaml" (include "agentstack.configDir" .))
  "adapters_root" (include "agentstack.adaptersDir" .)
  "redis_prefix" .Values.redis.prefix
  "dtype" $e.dtype
  "max_model_len" $e.maxModelLen
  "max_num_seqs" $e.maxNumSeqs
  "max_loras" $e.maxLoras
  "max_lora_rank" $e.maxLoraRank
  "lora_target_modules" $e.loraTargetModules
  "kv_cache_space_gib" $e.kvCacheSpaceGib
  "cache" (dict "mode" $e.sharedCache.mode "block_size" $e.sharedCache.blockSize)
  "enforce_eager" $e.enforceEager
  "seed" $e.seed
  "max_tokens_cap" .Values.limits.maxTokensCap
  "default_max_tokens" .Values.limits.defaultMaxTokens
  "max_body_bytes" .Values.limits.maxBodyBytes
  "header_timeout_s" .Values.limits.headerTimeoutS
  "keepalive_timeout_s" .Values.limits.keepaliveTimeoutS
  "run_lease_s" .Values.workflows.runLeaseS
  "run_retention_s" .Values.workflows.runRetentionS
  "auth_required" .Values.auth.enabled
}}
{{- with include "agentstack.modelDir" . }}
{{- $_ := set $config "model" . }}
{{- end }}
{{- toYaml (merge $config (deepCopy .Values.extraConfig)) }}
{{- end }}

{{/*
The roles file: `roles`, or else the packaged demo roles. Relative adapter paths become
absolute under the artifacts root, because the service would resolve them against the
ConfigMap's directory.
*/}}
{{- define "agentstack.rolesFile" -}}
{{- $root := include "agentstack.artifactsRoot" . }}
{{- $source := .Values.roles }}
{{- if not $source }}
{{- $source = (.Files.Get "files/roles.yaml" | fromYaml).roles }}
{{- end }}
{{- $roles := list }}
{{- range $source }}
{{- $role := deepCopy . }}
{{- if and $role.adapter (not (hasPrefix "/" $role.adapter)) }}
{{- $_ := set $role "adapter" (printf "%s/%s" $root $role.adapter) }}
{{- end }}
{{- $roles = append $roles $role }}
{{- end }}
{{- toYaml (dict "roles" $roles) }}
{{- end }}

{{/*
Redis: the bundled server's Service and password Secret, and where the server's URL comes from.
*/}}
{{- define "agentstack.redisFullname" -}}
{{- printf "%s-redis" (include "agentstack.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agentstack.redisPasswordSecret" -}}
{{- default (include "agentstack.redisFullname" .) .Values.redis.bundled.existingSecret }}
{{- end }}

{{- define "agentstack.redisUrlSecret" -}}
{{- default (include "agentstack.fullname" .) .Values.redis.existingSecret }}
{{- end }}

{{- define "agentstack.apiKeysSecret" -}}
{{- default (include "agentstack.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/*
Whether the chart's own Secret has anything to hold.
*/}}
{{- define "agentstack.ownSecretNeeded" -}}
{{- $redis := and (not .Values.redis.bundled.enabled) (not .Values.redis.existingSecret) }}
{{- $keys := and .Values.auth.enabled (not .Values.auth.existingSecret) }}
{{- if or $redis $keys }}true{{ end }}
{{- end }}

{{/*
Refuse value combinations that render but cannot work.
*/}}
{{- define "agentstack.validate" -}}
{{- if and (not .Values.redis.bundled.enabled) (not .Values.redis.url) (not .Values.redis.existingSecret) }}
{{- fail "redis: with redis.bundled.enabled=false, set redis.url or redis.existingSecret" }}
{{- end }}
{{- if and .Values.redis.bundled.enabled (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "redis: redis.url and redis.existingSecret are for an external Redis; set redis.bundled.enabled=false" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) (not .Values.auth.apiKeys) }}
{{- fail "auth: with auth.enabled=true, set auth.existingSecret or auth.apiKeys" }}
{{- end }}
{{- if and (eq .Values.artifacts.source "pvc") (not .Values.artifacts.pvc.existingClaim) }}
{{- fail "artifacts: source pvc needs artifacts.pvc.existingClaim" }}
{{- end }}
{{- if and (eq .Values.artifacts.source "initContainer") (not .Values.artifacts.initContainer.command) (not .Values.artifacts.initContainer.args) }}
{{- fail "artifacts: source initContainer needs artifacts.initContainer.command or args" }}
{{- end }}
{{- $seen := dict }}
{{- range (include "agentstack.rolesFile" . | fromYaml).roles }}
{{- if or (hasKey $seen .name) (eq .name $.Values.artifacts.servedModelName) }}
{{- fail (printf "roles: the name %q is used twice (role names and artifacts.servedModelName must differ)" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.metrics) }}
{{- fail "autoscaling: set targetCPUUtilizationPercentage or metrics" }}
{{- end }}
{{- end }}

{{/*
Every model name /v1/models should list: the base model and each role, space-separated.
*/}}
{{- define "agentstack.servedNames" -}}
{{- $names := list .Values.artifacts.servedModelName }}
{{- range (include "agentstack.rolesFile" . | fromYaml).roles }}
{{- $names = append $names .name }}
{{- end }}
{{- join " " $names }}
{{- end }}
