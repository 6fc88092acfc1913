//! One SQL text per query, run on either database: SQLite through
//! rusqlite in this process, PostgreSQL through sqlx.
//!
//! Handing a statement to sqlx's SQLite worker thread and back costs tens
//! of microseconds, many times what SQLite takes to run one of ours, and
//! every command runs several. So on SQLite the store's hot path (commits,
//! kv reads, the outbox) calls SQLite directly, on the caller's thread,
//! through the writer's one connection (`writer`): commits by whichever
//! caller finds it free, reads between its batches. PostgreSQL is a
//! network round trip whatever the client, so it stays on sqlx. A query is written once, with `$n` parameters both
//! accept, and its rows are read by column index with [`Row::get`].

use rusqlite::types::Value;

use super::{Cause, StoreError};

/// A statement with its parameters.
#[derive(Debug, Clone)]
pub(super) struct Query {
    sql: &'static str,
    args: Vec<Arg>,
}

/// Starts a statement; parameters follow with [`Query::bind`].
pub(super) fn query(sql: &'static str) -> Query {
    Query {
        sql,
        args: Vec::new(),
    }
}

impl Query {
    /// Binds the next `$n`.
    pub(super) fn bind(mut self, v: impl Into<Arg>) -> Self {
        self.args.push(v.into());
        self
    }

    /// Runs it: the number of rows it changed.
    pub(super) async fn execute(&self, on: &mut Conn<'_>) -> Result<u64, StoreError> {
        on.execute(self).await
    }

    /// Runs it, handing its rows to `each` until it says stop.
    pub(super) async fn fetch_while(
        &self,
        on: &mut Conn<'_>,
        each: impl FnMut(Row) -> Result<bool, StoreError> + Send,
    ) -> Result<(), StoreError> {
        on.fetch_while(self, each).await
    }

    /// Runs it: the first column of the first row, if there is a row.
    pub(super) async fn scalar<T: Column>(
        &self,
        on: &mut Conn<'_>,
    ) -> Result<Option<T>, StoreError> {
        let mut first = None;
        on.fetch_while(self, |row| {
            first = Some(row);
            Ok(false)
        })
        .await?;
        first.map(|r| r.get(0)).transpose()
    }

    fn sqlx(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(self.sql);
        for a in &self.args {
            // A NULL keeps its type: PostgreSQL checks it against the column.
            q = match a {
                Arg::Int(i) => q.bind(*i),
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Blob(b) => q.bind(b.as_slice()),
                Arg::Null(Kind::Int) => q.bind(None::<i64>),
                Arg::Null(Kind::Text) => q.bind(None::<String>),
                Arg::Null(Kind::Blob) => q.bind(None::<Vec<u8>>),
            };
        }
        q
    }

    /// Prepares it on `conn` (from the connection's statement cache) with
    /// its parameters bound by number: SQLite numbers `$n` parameters in
    /// the order they first appear, so `$2 … $1` must be bound by name.
    fn lite<'c>(
        &self,
        conn: &'c rusqlite::Connection,
    ) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
        let mut stmt = conn.prepare_cached(self.sql)?;
        for i in 1..=stmt.parameter_count() {
            let n = stmt
                .parameter_name(i)
                .and_then(|name| name.trim_start_matches(['$', '?']).parse::<usize>().ok())
                .unwrap_or(i);
            match self.args.get(n.wrapping_sub(1)) {
                Some(Arg::Int(v)) => stmt.raw_bind_parameter(i, v)?,
                Some(Arg::Text(v)) => stmt.raw_bind_parameter(i, v)?,
                Some(Arg::Blob(v)) => stmt.raw_bind_parameter(i, v)?,
                Some(Arg::Null(_)) | None => stmt.raw_bind_parameter(i, rusqlite::types::Null)?,
            }
        }
        Ok(stmt)
    }
}

/// A parameter value.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// NULL, of the type the value would have had.
    Null(Kind),
}

/// What a parameter is, for a typed NULL.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// An integer.
    Int,
    /// Text.
    Text,
    /// Bytes.
    Blob,
}

/// A value that can be a parameter; its kind types its NULL.
pub(super) trait Param: Into<Arg> {
    /// The kind of its values.
    const KIND: Kind;
}

macro_rules! param {
    ($t:ty, $kind:ident, |$v:ident| $make:expr) => {
        impl From<$t> for Arg {
            fn from($v: $t) -> Self {
                Arg::$kind($make)
            }
        }
        impl Param for $t {
            const KIND: Kind = Kind::$kind;
        }
    };
}

param!(i64, Int, |v| v);
param!(&i64, Int, |v| *v);
param!(&str, Text, |v| v.to_owned());
param!(String, Text, |v| v);
param!(&String, Text, |v| v.clone());
param!(&[u8], Blob, |v| v.to_vec());
param!(Vec<u8>, Blob, |v| v);
param!(&Vec<u8>, Blob, |v| v.clone());

impl<T: Param> From<Option<T>> for Arg {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null(T::KIND), Into::into)
    }
}

impl<'a, T> From<&'a Option<T>> for Arg
where
    &'a T: Param,
{
    fn from(v: &'a Option<T>) -> Self {
        v.as_ref().into()
    }
}

/// A row, from either database.
pub(super) enum Row {
    /// SQLite's values, column by column.
    Lite(Vec<Value>),
    /// PostgreSQL's row as sqlx gave it.
    Any(sqlx::any::AnyRow),
}

impl Row {
    /// Column `i` as a `T`; a column of another type is an error, as it
    /// would be a fault in the query.
    pub(super) fn get<T: Column>(&self, i: usize) -> Result<T, StoreError> {
        match self {
            Row::Lite(values) => values.get(i).and_then(T::lite).ok_or_else(|| {
                StoreError::Db(format!("column {i} is not a {}", std::any::type_name::<T>()).into())
            }),
            Row::Any(row) => T::any(row, i).map_err(|e| StoreError::Db(Box::new(e))),
        }
    }
}

/// A type a column can be read as.
pub(super) trait Column: Sized {
    /// From an SQLite value.
    fn lite(v: &Value) -> Option<Self>;
    /// From column `i` of a sqlx row.
    fn any(row: &sqlx::any::AnyRow, i: usize) -> Result<Self, sqlx::Error>;
}

macro_rules! column {
    ($t:ty, $lite:expr) => {
        impl Column for $t {
            fn lite(v: &Value) -> Option<Self> {
                #[allow(clippy::redundant_closure_call)]
                ($lite)(v)
            }
            fn any(row: &sqlx::any::AnyRow, i: usize) -> Result<Self, sqlx::Error> {
                sqlx::Row::try_get(row, i)
            }
        }
        impl Column for Option<$t> {
            fn lite(v: &Value) -> Option<Self> {
                match v {
                    Value::Null => Some(None),
                    v => <$t as Column>::lite(v).map(Some),
                }
            }
            fn any(row: &sqlx::any::AnyRow, i: usize) -> Result<Self, sqlx::Error> {
                sqlx::Row::try_get(row, i)
            }
        }
    };
}

column!(i64, |v: &Value| match v {
    Value::Integer(i) => Some(*i),
    _ => None,
});
column!(String, |v: &Value| match v {
    Value::Text(s) => Some(s.clone()),
    _ => None,
});
column!(Vec<u8>, |v: &Value| match v {
    Value::Blob(b) => Some(b.clone()),
    Value::Text(s) => Some(s.clone().into_bytes()),
    _ => None,
});

/// Where statements run: a connection (or the transaction open on it) of
/// either database. On SQLite every future here is ready at once: the
/// statement runs inside the first poll, on the caller's thread.
pub(super) enum Conn<'c> {
    /// SQLite, through rusqlite.
    Lite(&'c mut rusqlite::Connection),
    /// PostgreSQL, through sqlx.
    Any(&'c mut sqlx::AnyConnection),
}

impl Conn<'_> {
    async fn execute(&mut self, q: &Query) -> Result<u64, StoreError> {
        match self {
            Conn::Lite(conn) => q
                .lite(conn)
                .and_then(|mut stmt| stmt.raw_execute())
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(classify),
            Conn::Any(conn) => Ok(q.sqlx().execute(&mut **conn).await?.rows_affected()),
        }
    }

    /// Hands `q`'s rows to `each` one at a time until it says stop, so a
    /// large answer is never held whole.
    async fn fetch_while(
        &mut self,
        q: &Query,
        mut each: impl FnMut(Row) -> Result<bool, StoreError> + Send,
    ) -> Result<(), StoreError> {
        match self {
            Conn::Lite(conn) => {
                let mut stmt = q.lite(conn).map_err(classify)?;
                let width = stmt.column_count();
                let mut rows = stmt.raw_query();
                while let Some(row) = rows.next().map_err(classify)? {
                    let mut values = Vec::with_capacity(width);
                    for i in 0..width {
                        values.push(row.get::<_, Value>(i).map_err(classify)?);
                    }
                    if !each(Row::Lite(values))? {
                        break;
                    }
                }
            }
            Conn::Any(conn) => {
                use futures_util::TryStreamExt;
                let mut rows = q.sqlx().fetch(&mut **conn);
                while let Some(row) = rows.try_next().await? {
                    if !each(Row::Any(row))? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// What every connection to the SQLite file is set to, through either
/// client: WAL, so readers run while the writer commits; NORMAL sync,
/// durable across process crashes (the case that matters for "never lose
/// a command") and much faster than FULL; a busy timeout for the other
/// connections' writes.
pub(super) const SETTINGS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;";

/// A connection to the SQLite file at `path` with [`SETTINGS`].
pub(super) fn open(path: &std::path::Path) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(path).map_err(classify)?;
    conn.execute_batch(SETTINGS).map_err(classify)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Sorts an SQLite error as [`super::classify`] does a sqlx one.
pub(super) fn classify(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    let code = err.sqlite_error_code();
    let cause: Cause = Box::new(err);
    match code {
        Some(C::DatabaseBusy | C::DatabaseLocked) => StoreError::Conflict,
        Some(C::TooBig) => StoreError::Refused(cause),
        Some(C::SystemIoFailure | C::DiskFull | C::CannotOpen) => StoreError::Unavailable(cause),
        _ => StoreError::Db(cause),
    }
}
