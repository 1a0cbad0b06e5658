//! A result read from its typed columns, in PostgreSQL's binary format: the record's serde
//! fields deserialized straight from the row, as SQLite's reader does with its columns.
//!
//! Reading rows as `row_to_json` text made the server build about 1.2 KB of JSON per run —
//! most of it the column names, 6 µs of its CPU a run — and send it all; a fleet publisher's
//! cold read of an hour (600,000 runs) spent most of its time there. The columns are
//! selected in [`RESULT_COLUMNS`] order after `ts_ms` and `itl_gaps_us`, so the same list
//! the writer and SQLite use keeps them in step with the record.

use std::sync::LazyLock;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Type};

use super::Failure;
use crate::result::ResultRecord;
use crate::store::sqlite::RESULT_COLUMNS;

/// Columns that come before the record's in [`COLUMNS`].
const LEADING: usize = 2;

/// Record fields stored as `NUMERIC(20)` (a `u64` fits no other column type): selected as
/// text and parsed, since the driver has no numeric decoder.
const NUMERIC: &[&str] = &["ratelimit_remaining_requests", "ratelimit_remaining_tokens"];

/// The select list of a result read from table alias `r`: `ts_ms`, `itl_gaps_us`, then the
/// record's columns.
pub(super) static COLUMNS: LazyLock<String> = LazyLock::new(|| {
    ["ts_ms", "itl_gaps_us"]
        .iter()
        .chain(RESULT_COLUMNS)
        .map(|column| {
            if NUMERIC.contains(column) {
                format!("r.\"{column}\"::text AS \"{column}\"")
            } else {
                format!("r.\"{column}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
});

/// A record and its unix ms from a row selected with [`COLUMNS`].
pub(super) fn record(row: &Row) -> Result<(ResultRecord, i64), Failure> {
    let corrupt = |why: String| Failure::Corrupt(format!("a stored result does not decode: {why}"));
    let ts_ms: i64 = row.try_get(0).map_err(|err| corrupt(err.to_string()))?;
    let gaps: Option<Vec<i64>> = row.try_get(1).map_err(|err| corrupt(err.to_string()))?;
    let mut record: ResultRecord =
        serde::Deserialize::deserialize(RowDeserializer(Fields { row, next: LEADING }))
            .map_err(|err| corrupt(err.0))?;
    record.itl_gaps_us = gaps
        .unwrap_or_default()
        .into_iter()
        .map(|gap| u32::try_from(gap).unwrap_or(u32::MAX))
        .collect();
    Ok((record, ts_ms))
}

/// Why a row did not decode.
#[derive(Debug)]
struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// The row's columns from `next` on, as a map of name to value.
struct Fields<'a> {
    row: &'a Row,
    next: usize,
}

/// The row as a map (what a derived struct asks for).
struct RowDeserializer<'a>(Fields<'a>);

impl<'de, 'a: 'de> de::Deserializer<'de> for RowDeserializer<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de, 'a: 'de> MapAccess<'de> for Fields<'a> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(column) = self.row.columns().get(self.next) else {
            return Ok(None);
        };
        let name: &'a str = column.name();
        seed.deserialize(IntoDeserializer::<Error>::into_deserializer(name))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let value = Value {
            row: self.row,
            index: self.next,
        };
        self.next += 1;
        seed.deserialize(value)
    }
}

/// Whether a column holds NULL, whatever its type.
struct IsNull(bool);

impl<'a> FromSql<'a> for IsNull {
    fn from_sql(_: &Type, _: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull(false))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull(true))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One column's value.
struct Value<'a> {
    row: &'a Row,
    index: usize,
}

impl<'a> Value<'a> {
    fn get<T: FromSql<'a>>(&self) -> Result<T, Error> {
        self.row.try_get(self.index).map_err(|err| {
            Error(format!(
                "column {}: {err}",
                self.row.columns()[self.index].name()
            ))
        })
    }

    fn kind(&self) -> &Type {
        self.row.columns()[self.index].type_()
    }
}

impl<'de, 'a: 'de> de::Deserializer<'de> for Value<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.get::<IsNull>()?.0 {
            return visitor.visit_none();
        }
        match *self.kind() {
            Type::BOOL => visitor.visit_bool(self.get()?),
            Type::INT2 => visitor.visit_i16(self.get()?),
            Type::INT4 => visitor.visit_i32(self.get()?),
            Type::INT8 => visitor.visit_i64(self.get()?),
            Type::FLOAT4 => visitor.visit_f32(self.get()?),
            Type::FLOAT8 => visitor.visit_f64(self.get()?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                visitor.visit_borrowed_str(self.get::<&'a str>()?)
            }
            ref other => Err(Error(format!(
                "column {} has type {other}, which a record does not hold",
                self.row.columns()[self.index].name()
            ))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.get::<IsNull>()?.0 {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    /// A `NUMERIC(20)` column comes as text (see [`NUMERIC`]).
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match *self.kind() {
            Type::TEXT => {
                let text: &str = self.get()?;
                let value = text
                    .parse()
                    .map_err(|err| Error(format!("{text:?} is not a u64: {err}")))?;
                visitor.visit_u64(value)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let text: &'a str = self.get()?;
        let variant: StrDeserializer<'a, Error> = text.into_deserializer();
        visitor.visit_enum(variant)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}
