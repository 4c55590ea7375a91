{{/* Names and labels shared by every object of the chart. */}}
{{- define "fusionstream.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fusionstream.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fusionstream.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fusionstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fusionstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fusionstream.image" -}}
{{- $suffix := ternary "-cuda" "" (eq .Values.image.variant "cuda") -}}
{{ .Values.image.repository }}:{{ default (printf "%s%s" .Chart.AppVersion $suffix) .Values.image.tag }}
{{- end -}}

{{/* Environment every container gets: the chart's own settings, then the user's. */}}
{{- define "fusionstream.env" -}}
- name: FUSIONSTREAM__TELEMETRY__METRICS_LISTEN
  value: "0.0.0.0:{{ .Values.metricsPort }}"
- name: FUSIONSTREAM__TELEMETRY__PROGRESS
  value: never
- name: FUSIONSTREAM__MODEL__CACHE_DIR
  value: /var/cache/fusionstream/bundles
{{- range .Values.env }}
- {{ toYaml . | nindent 2 | trim }}
{{- end }}
{{- range .Values.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .secretKey }}
{{- end }}
{{- end -}}

{{/* Volumes every pod gets: the configuration, a model cache, /tmp (the root is read-only). */}}
{{- define "fusionstream.volumes" -}}
- name: config
  configMap:
    name: {{ include "fusionstream.fullname" . }}
- name: cache
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "fusionstream.volumeMounts" -}}
- name: config
  mountPath: /etc/fusionstream
  readOnly: true
- name: cache
  mountPath: /var/cache/fusionstream
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The workers' kind: a StatefulSet when their identity must be stable (exactly-once). */}}
{{- define "fusionstream.workerKind" -}}
{{- if .Values.worker.stableIdentity }}StatefulSet{{ else }}Deployment{{ end }}
{{- end }}

{{/* A container's resources: `resources` with `gpus` nvidia.com/gpu requested and limited
     (none when gpus is 0). Called with (dict "resources" … "gpus" …). */}}
{{- define "fusionstream.resources" -}}
{{- $r := deepCopy (.resources | default dict) -}}
{{- if gt (int .gpus) 0 -}}
{{- $_ := set $r "requests" (merge (dict "nvidia.com/gpu" (int .gpus)) ($r.requests | default dict)) -}}
{{- $_ := set $r "limits" (merge (dict "nvidia.com/gpu" (int .gpus)) ($r.limits | default dict)) -}}
{{- end -}}
{{- toYaml $r -}}
{{- end -}}
