//! Per-caller memory of conversation turns in an embedded LanceDB database under the data
//! directory (`<data_dir>/memory.lance`, table `turns`).
//!
//! This is the plain store the episodic memory engine (crates/memory, later) builds on:
//! every turn with caller, call, time, role and text. Recall is "the caller's most
//! recent turns". The seam for semantic recall is the schema: an `embedding` column
//! (MiniLM, 384 floats) can be added and filled without changing the `Memory` trait.
//!
//! LanceDB is async. The async methods suit a tokio shell; the `Memory` trait methods
//! block on a private runtime and must be called from a worker thread or
//! `spawn_blocking`, never from inside an async task.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use lancedb::arrow::arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use lancedb::arrow::arrow_schema::{DataType, Field, Schema, SchemaRef};
use lancedb::query::{ExecutableQuery, QueryBase};
use lancedb::{Connection, Table};
use sofia_voice::{Memory, Role, StageError, TurnRecord};

const TABLE: &str = "turns";

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("caller", DataType::Utf8, false),
        Field::new("call_id", DataType::Utf8, false),
        Field::new("unix_ms", DataType::Int64, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]))
}

fn storage(e: impl std::fmt::Display) -> StageError {
    StageError::Storage(e.to_string())
}

/// A SQL string literal (LanceDB filters are SQL).
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub struct LanceMemory {
    path: PathBuf,
    _db: Connection,
    table: Table,
    runtime: crate::voice::runtime::PrivateRuntime,
}

impl LanceMemory {
    /// Opens (creating if needed) the memory under `data_dir`. Blocking; call it at
    /// start-up or from a worker thread.
    pub fn open(data_dir: &Path) -> Result<Self, StageError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lancedb")
            .enable_all()
            .build()
            .map_err(storage)?;
        let path = data_dir.join("memory.lance");
        let (db, table) = runtime.block_on(Self::open_async(&path))?;
        Ok(Self {
            path,
            _db: db,
            table,
            runtime: crate::voice::runtime::PrivateRuntime::new(runtime),
        })
    }

    async fn open_async(path: &Path) -> Result<(Connection, Table), StageError> {
        std::fs::create_dir_all(path).map_err(storage)?;
        let uri = path
            .to_str()
            .ok_or_else(|| StageError::Storage(format!("{} is not UTF-8", path.display())))?;
        let db = lancedb::connect(uri).execute().await.map_err(storage)?;
        let names = db.table_names().execute().await.map_err(storage)?;
        let table = if names.iter().any(|n| n == TABLE) {
            db.open_table(TABLE).execute().await.map_err(storage)?
        } else {
            db.create_empty_table(TABLE, schema())
                .execute()
                .await
                .map_err(storage)?
        };
        Ok((db, table))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn remember_async(&self, turn: &TurnRecord) -> Result<(), StageError> {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec![turn.caller.as_str()])),
                Arc::new(StringArray::from(vec![turn.call_id.as_str()])),
                Arc::new(Int64Array::from(vec![turn.unix_ms])),
                Arc::new(StringArray::from(vec![turn.role.as_str()])),
                Arc::new(StringArray::from(vec![turn.text.as_str()])),
            ],
        )
        .map_err(storage)?;
        self.table.add(batch).execute().await.map_err(storage)?;
        Ok(())
    }

    /// The caller's most recent `limit` turns, oldest first.
    pub async fn recall_async(
        &self,
        caller: &str,
        limit: usize,
    ) -> Result<Vec<TurnRecord>, StageError> {
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .only_if(format!("caller = {}", sql_string(caller)))
            .execute()
            .await
            .map_err(storage)?
            .try_collect()
            .await
            .map_err(storage)?;
        let mut turns = Vec::new();
        for batch in &batches {
            turns.extend(rows(batch)?);
        }
        // Stable sort: turns stored in the same millisecond keep their insertion order.
        turns.sort_by_key(|t| t.unix_ms);
        let skip = turns.len().saturating_sub(limit);
        Ok(turns.split_off(skip))
    }

    /// Number of stored turns (all callers).
    pub async fn count_async(&self) -> Result<usize, StageError> {
        self.table.count_rows(None).await.map_err(storage)
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, StageError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| StageError::Storage(format!("memory table lacks text column {name}")))
}

fn rows(batch: &RecordBatch) -> Result<Vec<TurnRecord>, StageError> {
    let caller = column(batch, "caller")?;
    let call_id = column(batch, "call_id")?;
    let role = column(batch, "role")?;
    let text = column(batch, "text")?;
    let unix_ms = batch
        .column_by_name("unix_ms")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| StageError::Storage("memory table lacks column unix_ms".into()))?;
    (0..batch.num_rows())
        .map(|i| {
            Ok(TurnRecord {
                caller: caller.value(i).to_string(),
                call_id: call_id.value(i).to_string(),
                unix_ms: unix_ms.value(i),
                role: Role::parse(role.value(i)).ok_or_else(|| {
                    StageError::Storage(format!("unknown role {:?} in memory", role.value(i)))
                })?,
                text: text.value(i).to_string(),
            })
        })
        .collect()
}

impl Memory for LanceMemory {
    fn recall(&self, caller: &str, limit: usize) -> Result<Vec<TurnRecord>, StageError> {
        self.runtime.block_on(self.recall_async(caller, limit))
    }

    fn remember(&self, turn: &TurnRecord) -> Result<(), StageError> {
        self.runtime.block_on(self.remember_async(turn))
    }
}
