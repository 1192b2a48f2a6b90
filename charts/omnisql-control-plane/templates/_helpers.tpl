{{- define "omnisql-control-plane.labels" -}}
app.kubernetes.io/name: omnisql-control-plane
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "omnisql-control-plane.selector" -}}
app.kubernetes.io/name: omnisql-control-plane
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
