//! The store's one SQL surface over both backends: each query is written once, with `?1`-style placeholders, and
//! runs on SQLite as written or on PostgreSQL with the placeholders translated to `$1` ([`to_postgres`]).
//!
//! Values go in and come out as [`Value`] (integers, text, NULL: the only types the schema uses), rows are read
//! whole into [`Row`]s before the caller looks at them, so no statement or cursor outlives a call. What differs
//! between the two dialects is kept out of the queries: they use the common subset (`RETURNING id` instead of
//! `last_insert_rowid()`, `ON CONFLICT … DO NOTHING/UPDATE`, `IS NOT DISTINCT FROM`, `CASE` instead of summing
//! booleans, aliased subqueries), and the rest (how a transaction begins, the schema's DDL, fencing) is here and in
//! [`super::pg`].

use std::cell::Cell;
use std::fmt;

use super::pg::PgConn;

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (SQLite INTEGER, PostgreSQL BIGINT/INTEGER/SMALLINT/BOOLEAN).
    Int(i64),
    /// A floating-point number (not used by the schema; read for completeness).
    Real(f64),
    /// Text.
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(v.into())
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Self {
        v.as_deref().into()
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Int(i) => write!(f, "integer {i}"),
            Value::Real(r) => write!(f, "real {r}"),
            Value::Text(_) => write!(f, "text"),
        }
    }
}

/// Parameters of a statement: `args![a, b, c]` (anything with `Into<Value>`).
#[macro_export]
#[doc(hidden)]
macro_rules! __store_args {
    ($($v:expr),* $(,)?) => { &[$($crate::store::Value::from($v)),*][..] };
}
pub use crate::__store_args as args;

/// A column type [`Row::get`] can read.
pub trait FromValue: Sized {
    /// The value as this type, `None` when it is not one.
    fn from_value(v: &Value) -> Option<Self>;
    /// What the type is called in an error.
    const WHAT: &'static str;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    const WHAT: &'static str = "an integer";
}
impl FromValue for u32 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|i| u32::try_from(i).ok())
    }
    const WHAT: &'static str = "a non-negative 32-bit integer";
}
impl FromValue for u64 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|i| u64::try_from(i).ok())
    }
    const WHAT: &'static str = "a non-negative integer";
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
    const WHAT: &'static str = "a boolean";
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
    const WHAT: &'static str = "text";
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
    const WHAT: &'static str = T::WHAT;
}

/// One result row, read whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub(crate) Vec<Value>);

impl Row {
    /// Column `i` (from 0) as `T`; a NULL or a value of another type is an error naming the column.
    pub fn get<T: FromValue>(&self, i: usize) -> DbResult<T> {
        let v = self.0.get(i).ok_or(DbError::Column { index: i, want: T::WHAT, found: "no such column".into() })?;
        T::from_value(v).ok_or_else(|| DbError::Column { index: i, want: T::WHAT, found: v.to_string() })
    }

    /// Column `i` as text parsed into one of the domain enums; a value this binary does not know is an error
    /// naming it.
    pub fn parse<T: std::str::FromStr<Err = crate::model::UnknownValue>>(&self, i: usize) -> DbResult<T> {
        let s: String = self.get(i)?;
        s.parse().map_err(|e: crate::model::UnknownValue| DbError::Other(format!("column {i}: {e}")))
    }
}

/// The holder and epoch of the leader lease that allows this process's writes (PostgreSQL only; see
/// [`super::Store::set_fence`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fence {
    /// The lease's epoch: it only grows, one step per change of leader.
    pub epoch: i64,
    /// Who holds the lease (the election's holder id).
    pub holder: String,
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` at epoch {}", self.holder, self.epoch)
    }
}

/// What a database call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said so.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL (or the connection to it) said so.
    #[error("{message}")]
    Postgres {
        /// The server's message with its SQLSTATE, or what the client saw (connection refused, lost, …).
        message: String,
        /// The SQLSTATE, for a server error.
        code: Option<String>,
    },
    /// A column did not hold what the query expected.
    #[error("column {index}: expected {want}, found {found}")]
    Column {
        /// Which column (from 0).
        index: usize,
        /// What was expected.
        want: &'static str,
        /// What was found.
        found: String,
    },
    /// The leader lease no longer names this process: the write was refused.
    #[error("{}", fenced_message(ours, current))]
    Fenced {
        /// The lease this process holds (or held).
        ours: Option<Fence>,
        /// The lease as the database has it now (`None`: nobody holds it).
        current: Option<Fence>,
    },
    /// Anything else (a row missing that must be there, a backend gone).
    #[error("{0}")]
    Other(String),
}

pub(crate) fn fenced_message(ours: &Option<Fence>, current: &Option<Fence>) -> String {
    let ours = ours.as_ref().map_or("no lease".to_string(), |f| format!("the lease of {f}"));
    let current = current.as_ref().map_or("nobody holds it now".to_string(), |f| format!("it is {f} now"));
    format!("write refused: this Warden acts under {ours}, but {current} (another Warden leads)")
}

/// Result of a database call.
pub type DbResult<T> = std::result::Result<T, DbError>;

/// Which database the store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The store's connection: the one [`super::Store`] serializes its callers on.
pub struct Db {
    inner: Conn,
    /// A PostgreSQL transaction is open (SQLite knows this itself).
    pg_in_tx: Cell<bool>,
}

enum Conn {
    Sqlite(rusqlite::Connection),
    Pg(PgConn),
}

impl Db {
    pub(crate) fn sqlite(c: rusqlite::Connection) -> Db {
        Db { inner: Conn::Sqlite(c), pg_in_tx: Cell::new(false) }
    }

    pub(crate) fn postgres(c: PgConn) -> Db {
        Db { inner: Conn::Pg(c), pg_in_tx: Cell::new(false) }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Pg(_) => Backend::Postgres,
        }
    }

    pub(crate) fn sqlite_conn(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Conn::Sqlite(c) => Some(c),
            Conn::Pg(_) => None,
        }
    }

    pub(crate) fn pg(&self) -> Option<&PgConn> {
        match &self.inner {
            Conn::Pg(c) => Some(c),
            Conn::Sqlite(_) => None,
        }
    }

    /// Runs one statement; returns the number of rows it changed. On PostgreSQL with a fence set, a write
    /// (`INSERT`, `UPDATE`, `DELETE`) is checked against the leader lease first.
    pub fn execute(&self, sql: &str, params: &[Value]) -> DbResult<usize> {
        match &self.inner {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                Ok(st.execute(rusqlite::params_from_iter(params.iter()))?)
            }
            Conn::Pg(c) => c.execute(sql, params),
        }
    }

    /// Runs a query and returns all its rows.
    pub fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>> {
        match &self.inner {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.column_count();
                let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
                let mut out = vec![];
                while let Some(r) = rows.next()? {
                    let mut cols = Vec::with_capacity(n);
                    for i in 0..n {
                        cols.push(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(i) => Value::Int(i),
                            rusqlite::types::ValueRef::Real(f) => Value::Real(f),
                            rusqlite::types::ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                            rusqlite::types::ValueRef::Blob(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
                        });
                    }
                    out.push(Row(cols));
                }
                Ok(out)
            }
            Conn::Pg(c) => c.query(sql, params),
        }
    }

    /// The first row of a query, if it has one.
    pub fn query_opt(&self, sql: &str, params: &[Value]) -> DbResult<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row of a query, which must have one.
    pub fn query_one(&self, sql: &str, params: &[Value]) -> DbResult<Row> {
        self.query_opt(sql, params)?.ok_or_else(|| DbError::Other(format!("no row from `{}`", first_line(sql))))
    }

    /// Runs several statements without parameters (schema changes, tests). Not fenced.
    pub fn batch(&self, sql: &str) -> DbResult<()> {
        match &self.inner {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(c) => c.batch(sql),
        }
    }

    /// True inside a transaction.
    pub fn in_transaction(&self) -> bool {
        match &self.inner {
            Conn::Sqlite(c) => !c.is_autocommit(),
            Conn::Pg(_) => self.pg_in_tx.get(),
        }
    }

    /// Opens a transaction that takes the write lock at once on SQLite (`BEGIN IMMEDIATE`: one writer at a time
    /// across processes); on PostgreSQL a `READ COMMITTED` one, whose races are settled by row locks (see
    /// [`super`]'s docs).
    pub(crate) fn begin(&self) -> DbResult<()> {
        match &self.inner {
            Conn::Sqlite(c) => Ok(c.execute_batch("BEGIN IMMEDIATE")?),
            Conn::Pg(c) => {
                c.begin()?;
                self.pg_in_tx.set(true);
                Ok(())
            }
        }
    }

    /// Ends the open transaction: commits it, or rolls it back.
    pub(crate) fn end(&self, commit: bool) -> DbResult<()> {
        match &self.inner {
            Conn::Sqlite(c) => Ok(c.execute_batch(if commit { "COMMIT" } else { "ROLLBACK" })?),
            Conn::Pg(c) => {
                self.pg_in_tx.set(false);
                c.end(commit)
            }
        }
    }
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or("")
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// True for a statement that changes rows (what a fence guards).
pub(crate) fn is_write(sql: &str) -> bool {
    let word: String = sql.trim_start().chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    matches!(word.to_ascii_uppercase().as_str(), "INSERT" | "UPDATE" | "DELETE")
}

/// `?1`-style placeholders as PostgreSQL's `$1`. Text in single quotes, quoted identifiers and comments are left
/// as they are; a bare `?` (no number) is an error, since the two dialects would number it differently.
pub fn to_postgres(sql: &str) -> Result<String, String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => {
                let end = b[i + 1..].iter().position(|x| *x == c).map_or(b.len(), |p| i + 1 + p + 1);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = b[i..].iter().position(|x| *x == b'\n').map_or(b.len(), |p| i + p);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'?' => {
                let digits = b[i + 1..].iter().take_while(|x| x.is_ascii_digit()).count();
                if digits == 0 {
                    return Err(format!("a `?` without a number at byte {i}: write `?1`, `?2`, …"));
                }
                out.push('$');
                out.push_str(&sql[i + 1..i + 1 + digits]);
                i += 1 + digits;
            }
            _ => {
                let ch = sql[i..].chars().next().expect("in bounds");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollar_numbers_outside_quotes_and_comments() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '?3' AND \"e?4\" = ?2 -- ?5\n AND f = ?1")
                .unwrap(),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '?3' AND \"e?4\" = $2 -- ?5\n AND f = $1"
        );
        assert_eq!(to_postgres("VALUES ('it''s ?1', ?1)").unwrap(), "VALUES ('it''s ?1', $1)");
        assert_eq!(to_postgres("SELECT 'é', ?1").unwrap(), "SELECT 'é', $1");
        assert!(to_postgres("SELECT ?").unwrap_err().contains("without a number"));
        assert!(to_postgres("SELECT ? + 1").is_err());
    }

    #[test]
    fn writes_are_told_from_reads() {
        assert!(is_write("  insert INTO x VALUES (1)"));
        assert!(is_write("UPDATE x SET a = 1"));
        assert!(is_write("\nDELETE FROM x"));
        assert!(!is_write("SELECT * FROM x"));
        assert!(!is_write("SAVEPOINT warden_step"));
    }

    #[test]
    fn a_column_of_the_wrong_type_is_an_error_naming_it() {
        let r = Row(vec![Value::Int(3), Value::Null, Value::Text("x".into())]);
        assert_eq!(r.get::<i64>(0).unwrap(), 3);
        assert_eq!(r.get::<Option<String>>(1).unwrap(), None);
        assert_eq!(r.get::<String>(2).unwrap(), "x");
        assert_eq!(r.get::<String>(1).unwrap_err().to_string(), "column 1: expected text, found NULL");
        assert!(r.get::<i64>(9).is_err());
    }
}
