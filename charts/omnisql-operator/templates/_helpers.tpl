{{- define "omnisql-operator.labels" -}}
app.kubernetes.io/name: omnisql-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "omnisql-operator.selector" -}}
app.kubernetes.io/name: omnisql-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
