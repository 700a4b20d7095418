//! Multi-row `VALUES` statements of a few fixed sizes, for upserts of many rows per commit.
//!
//! A commit of 64 transactions upserts about six rollup rows per transaction (its items'
//! hour and day rows do not merge with the other transactions'). Handed to SQLite as one
//! JSON array, each row cost more in JSON than in the upsert itself: the text is turned
//! into JSONB, each of the ten columns is found by walking the row's array from its start,
//! and the numbers are parsed back from text. Bound parameters arrive as SQLite values.
//!
//! The SQL must not change with every row count: SQLite prepares each distinct text, and
//! sqlx keeps a bounded cache of them per connection. So rows go in statements of
//! [`SIZES`] rows, as many full ones of the largest size as needed and one more of the
//! smallest size that holds the rest, padded with rows of NULLs that the statement's
//! `WHERE column1 IS NOT NULL` drops.

use std::sync::OnceLock;

use sqlx::error::BoxDynError;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, SqliteConnection};

use crate::store::StoreError;

/// The row counts statements are prepared for (at most one of each per shape).
const SIZES: [usize; 6] = [8, 16, 32, 64, 128, LARGEST];
const LARGEST: usize = 256;

/// One statement shape: `template` holds `{rows}` where the `VALUES` rows go, and must
/// filter with `WHERE column1 IS NOT NULL` (the padding rows are all NULL).
#[derive(Debug)]
pub(crate) struct Shape {
    template: &'static str,
    columns: usize,
    sql: OnceLock<Vec<String>>,
}

/// Binds one row's `columns` values, in column order.
pub(crate) type BindRow<R> = fn(&mut SqliteArguments, R) -> Result<(), BoxDynError>;

impl Shape {
    /// A shape of `columns` bound values per row.
    pub(crate) const fn new(template: &'static str, columns: usize) -> Shape {
        Shape {
            template,
            columns,
            sql: OnceLock::new(),
        }
    }

    fn render(&self, rows: usize) -> String {
        let mut row = String::with_capacity(self.columns * 2 + 2);
        row.push('(');
        for i in 0..self.columns {
            row.push_str(if i == 0 { "?" } else { ",?" });
        }
        row.push(')');
        let values = vec![row.as_str(); rows].join(",");
        self.template.replace("{rows}", &values)
    }

    /// The statement for `SIZES[index]` rows, rendered once per process.
    fn sql(&'static self, index: usize) -> &'static str {
        let all = self
            .sql
            .get_or_init(|| SIZES.iter().map(|n| self.render(*n)).collect());
        all.get(index).map_or("", String::as_str)
    }

    /// Executes the statements that carry `rows`, in order.
    pub(crate) async fn execute<R>(
        &'static self,
        conn: &mut SqliteConnection,
        rows: Vec<R>,
        bind: BindRow<R>,
    ) -> Result<(), StoreError> {
        let encode = |e: BoxDynError| StoreError::Identity(format!("bind a row: {e}"));
        let mut rows = rows.into_iter();
        while rows.len() > 0 {
            let (index, size) = SIZES
                .iter()
                .copied()
                .enumerate()
                .find(|(_, size)| *size >= rows.len())
                .unwrap_or((SIZES.len() - 1, LARGEST));
            let take = rows.len().min(size);
            let mut args = SqliteArguments::default();
            args.reserve(size * self.columns, 0);
            for row in rows.by_ref().take(take) {
                bind(&mut args, row).map_err(encode)?;
            }
            for _ in 0..(size - take) * self.columns {
                args.add(None::<i64>).map_err(encode)?;
            }
            sqlx::query_with(self.sql(index), args)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_statements_have_one_placeholder_per_value() {
        static SHAPE: Shape = Shape::new("INSERT INTO t SELECT * FROM (VALUES {rows})", 3);
        for (index, size) in SIZES.iter().enumerate() {
            let sql = SHAPE.sql(index);
            assert_eq!(sql.matches('?').count(), size * 3);
            assert!(sql.starts_with("INSERT INTO t SELECT * FROM (VALUES (?,?,?),(?,?,?)"));
            assert!(sql.ends_with("(?,?,?))"));
        }
    }
}
