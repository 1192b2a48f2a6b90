package omnisql
import rego.v1

default allow := false

admin if "admins" in input.context.identity.groups
sales if "sales" in input.context.identity.groups

allow if admin
allow if {
    sales
    input.action.operation == "FilterTables"
    input.action.resource.table.schemaName in {"github", "salesforce"}
}
allow if {
    sales
    input.action.operation == "FilterColumns"
    not hidden_from_sales
}
hidden_from_sales if {
    input.action.resource.table.tableName == "account"
    input.action.resource.table.columns[0] == "annual_revenue"
}

rowFilters contains {"expression": "billing_country = 'USA'"} if {
    sales
    input.action.resource.table.tableName == "account"
}

columnMask := {"expression": "'***' || right(email, 4)"} if {
    not admin
    input.action.resource.column.tableName == "contact"
    input.action.resource.column.columnName == "email"
}
