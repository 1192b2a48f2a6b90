//! Flight SQL metadata beyond catalogs, schemas and tables, as JDBC and ODBC drivers ask for it when they
//! connect or a tool browses: the SQL types results use (`GetXdbcTypeInfo`), and primary and foreign keys
//! (`GetPrimaryKeys`, `GetImportedKeys`, `GetExportedKeys`, `GetCrossReference`). SaaS tables have no
//! declared keys, so the key answers are empty, in the schemas the Flight SQL specification gives them.

use std::sync::{Arc, LazyLock};

use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

/// The SQL types of OmniSQL's columns: what connectors produce and what queries over them compute.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    let text = |name: &str, data_type: XdbcDataType| XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        literal_prefix: Some("'".into()),
        literal_suffix: Some("'".into()),
        nullable: Nullable::NullabilityNullable,
        case_sensitive: true,
        searchable: Searchable::Full,
        local_type_name: Some(name.into()),
        sql_data_type: data_type,
        ..Default::default()
    };
    let number = |name: &str, data_type: XdbcDataType, column_size: i32, radix: i32| XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size: Some(column_size),
        nullable: Nullable::NullabilityNullable,
        searchable: Searchable::Basic,
        unsigned_attribute: Some(false),
        local_type_name: Some(name.into()),
        sql_data_type: data_type,
        num_prec_radix: Some(radix),
        ..Default::default()
    };
    builder.append(XdbcTypeInfo {
        searchable: Searchable::Basic,
        literal_prefix: None,
        literal_suffix: None,
        ..text("BOOLEAN", XdbcDataType::XdbcBit)
    });
    builder.append(number("INTEGER", XdbcDataType::XdbcInteger, 10, 10));
    builder.append(number("BIGINT", XdbcDataType::XdbcBigint, 19, 10));
    builder.append(number("DOUBLE", XdbcDataType::XdbcDouble, 53, 2));
    builder.append(XdbcTypeInfo {
        create_params: Some(vec!["precision".into(), "scale".into()]),
        minimum_scale: Some(0),
        maximum_scale: Some(38),
        fixed_prec_scale: true,
        ..number("DECIMAL", XdbcDataType::XdbcDecimal, 38, 10)
    });
    builder.append(text("VARCHAR", XdbcDataType::XdbcVarchar));
    builder.append(XdbcTypeInfo {
        column_size: Some(10),
        // Code 1 is ODBC's SQL_CODE_DATE; the protocol names it after its alias, YEAR.
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
        searchable: Searchable::Basic,
        literal_prefix: Some("DATE '".into()),
        ..text("DATE", XdbcDataType::XdbcDate)
    });
    builder.append(XdbcTypeInfo {
        column_size: Some(32),
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone),
        searchable: Searchable::Basic,
        literal_prefix: Some("TIMESTAMP '".into()),
        ..text("TIMESTAMP WITH TIME ZONE", XdbcDataType::XdbcTimestamp)
    });
    // A fixed list of well-formed rows always builds.
    builder.build().unwrap_or_else(|e| unreachable!("the XDBC type table is malformed: {e}"))
});

/// `CommandGetPrimaryKeys`' columns.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The columns of `CommandGetImportedKeys`, `CommandGetExportedKeys` and `CommandGetCrossReference`.
pub fn foreign_keys_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// No rows, in `schema`.
pub fn none(schema: SchemaRef) -> RecordBatch {
    RecordBatch::new_empty(schema)
}

/// Why OmniSQL answers no update, ingest or Substrait plan.
pub const READ_ONLY: &str = "OmniSQL is read-only: it answers queries (SELECT, WITH, VALUES, EXPLAIN, SHOW) over your \
     connections' tables and never writes to them; updates, inserts, bulk ingest and Substrait plans are not accepted";
