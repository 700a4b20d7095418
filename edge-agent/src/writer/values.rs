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
//!
//! A commit's statements go to the connection's thread as one [`Batch`]: their texts joined,
//! their values bound in order. Each call to that thread is two thread wake-ups, and under
//! load each wake-up of the writer waits its turn behind request handlers, so one call per
//! commit instead of one per statement shortens the agent's serial section.

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

    /// Adds the statements that carry `rows` to `batch`, in order.
    pub(crate) fn push<R>(
        &'static self,
        batch: &mut Batch,
        rows: Vec<R>,
        bind: BindRow<R>,
    ) -> Result<(), StoreError> {
        let mut rows = rows.into_iter();
        while rows.len() > 0 {
            let (index, size) = SIZES
                .iter()
                .copied()
                .enumerate()
                .find(|(_, size)| *size >= rows.len())
                .unwrap_or((SIZES.len() - 1, LARGEST));
            let take = rows.len().min(size);
            batch.push_sql(self.sql(index));
            batch.args.reserve(size * self.columns, 0);
            for row in rows.by_ref().take(take) {
                bind(&mut batch.args, row).map_err(bind_error)?;
            }
            for _ in 0..(size - take) * self.columns {
                batch.args.add(None::<i64>).map_err(bind_error)?;
            }
        }
        Ok(())
    }
}

fn bind_error(e: BoxDynError) -> StoreError {
    StoreError::Identity(format!("bind a row: {e}"))
}

/// Statements executed in one call to the connection's thread.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    sql: String,
    args: SqliteArguments,
}

impl Batch {
    /// Appends a statement; its values follow through [`Batch::bind`] or [`Shape::push`].
    pub(crate) fn push_sql(&mut self, sql: &str) {
        if !self.sql.is_empty() {
            self.sql.push_str(";\n");
        }
        self.sql.push_str(sql);
    }

    /// Binds the next value.
    pub(crate) fn bind<'q, T>(&mut self, value: T) -> Result<(), StoreError>
    where
        T: sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + 'q,
    {
        self.args.add(value).map_err(bind_error)
    }

    /// Runs the statements, in order.
    pub(crate) async fn execute(self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        if !self.sql.is_empty() {
            sqlx::query_with(sqlx::AssertSqlSafe(self.sql), self.args)
                .execute(conn)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, Row};

    /// Values bind in order across the statements of one batch, and padding rows are
    /// dropped.
    #[tokio::test]
    async fn a_batch_binds_each_statement_its_own_values() {
        static PAIRS: Shape = Shape::new(
            "INSERT INTO t (a, b) SELECT * FROM (VALUES {rows}) WHERE column1 IS NOT NULL",
            2,
        );
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (a INTEGER, b TEXT); CREATE TABLE u (c INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        let mut batch = Batch::default();
        let rows: Vec<(i64, String)> = (0..300).map(|i| (i, format!("r{i}"))).collect();
        PAIRS
            .push(&mut batch, rows, |args, (a, b)| {
                args.add(a)?;
                args.add(b)
            })
            .unwrap();
        batch.push_sql("INSERT INTO u (c) VALUES (?)");
        batch.bind(42i64).unwrap();
        PAIRS
            .push(
                &mut batch,
                vec![(1000i64, "last".to_owned())],
                |args, (a, b)| {
                    args.add(a)?;
                    args.add(b)
                },
            )
            .unwrap();
        batch.execute(&mut conn).await.unwrap();
        let rows = sqlx::query("SELECT a, b FROM t ORDER BY a")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows.len(), 301);
        for (i, row) in rows.iter().take(300).enumerate() {
            assert_eq!(row.get::<i64, _>(0), i as i64);
            assert_eq!(row.get::<String, _>(1), format!("r{i}"));
        }
        assert_eq!(rows[300].get::<String, _>(1), "last");
        let c: i64 = sqlx::query("SELECT c FROM u")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(c, 42);
    }

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
