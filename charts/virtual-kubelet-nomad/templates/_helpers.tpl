{{/* The chart's objects are named after the release: <release>-virtual-kubelet-nomad, or the release name when it says it already. */}}
{{- define "vkn.fullname" -}}
{{- if contains "virtual-kubelet-nomad" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-virtual-kubelet-nomad" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vkn.labels" -}}
app.kubernetes.io/name: virtual-kubelet-nomad
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "vkn.selector" -}}
app.kubernetes.io/name: virtual-kubelet-nomad
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vkn.nomadSecret" -}}
{{- default (include "vkn.fullname" .) .Values.nomad.existingSecret -}}
{{- end -}}

{{- define "vkn.bootstrapSecret" -}}
{{- default (printf "%s-bootstrap" (include "vkn.fullname" .)) .Values.bootstrap.existingSecret -}}
{{- end -}}
