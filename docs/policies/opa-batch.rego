# Load this module into your OPA server beside your policies to serve OmniSQL's external mode: it answers
# `data.omnisql.batch`, one decision per table the query reads, from the same per-resource rules
# (`allow`, `rowFilters`, `columnMask`) the data plane evaluates in-process, so a policy works unchanged
# in both modes. See docs/policies.md, "External OPA".
package omnisql

import rego.v1

# input.action.tables: [{"table": {catalogName, schemaName, tableName}, "columns": [{"name", "type"}]}]
batch := [_decision(t) | some t in input.action.tables]

_decision(t) := {
	"allow": _allowed({"operation": "FilterTables", "resource": {"table": t.table}}),
	"rowFilters": _row_filters(t.table),
	"columns": [_column(t.table, c) | some c in t.columns],
}

_column(table, c) := {
	"name": c.name,
	"allow": _allowed({"operation": "FilterColumns", "resource": {"table": object.union(table, {"columns": [c.name]})}}),
	"mask": _mask(table, c),
}

_allowed(action) := true if {
	allow with input.action as action
} else := false

_row_filters(table) := filters if {
	filters := [f | some f in rowFilters] with input.action as {"operation": "GetRowFilters", "resource": {"table": table}}
} else := []

_mask(table, c) := mask if {
	column := object.union(table, {"columnName": c.name, "columnType": c.type})
	mask := columnMask with input.action as {"operation": "GetColumnMask", "resource": {"column": column}}
} else := null
