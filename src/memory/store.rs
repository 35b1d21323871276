//! LanceDB storage of the episodic memory: one database directory (`<data_dir>/memory`)
//! with four tables, one per record kind of `sofia_memory`:
//!
//! | table | key | columns |
//! |---|---|---|
//! | `turns` | (`caller`, `id`) | id, caller, call_id, seq, unix_ms, speaker, text, embedding, surprise, strength, access_count, last_access_ms, episode_id |
//! | `episodes` | (`caller`, `id`) | id, caller, call_id, first_seq, last_seq, start_ms, end_ms, summary, embedding, surprise, strength |
//! | `facts` | (`caller`, `id`) | id, caller, slot, value, text, unix_ms, source_turns (JSON array of turn ids), superseded_by (nullable), embedding |
//! | `callers` | `caller` | caller, model_json (the [`CallerModel`] as JSON) |
//!
//! `embedding` is a non-nullable `FixedSizeList<Float32, DIM>` column (its items are
//! declared nullable, as Lance reads them back, and are never null). A fact whose
//! embedding is still empty (the shell has not computed it) is stored as zeros and read
//! back as an empty `Vec`: a real embedding is a unit vector, never all zeros.
//!
//! Every table has a BTree scalar index on `caller`. LanceDB cannot train an index on an
//! empty table, so it is created on the first write that leaves rows in the table (or by
//! [`LanceStore::optimize`]); rows added after it are indexed by `optimize`.
//!
//! Filters are SQL. Caller and record ids go into them only as string literals quoted by
//! [`sql_string`], and ids that are empty or hold control characters (NUL included) are
//! refused before any filter is built.
//!
//! The methods are async and meant for one writer task: [`LanceStore::write`],
//! [`LanceStore::forget_caller`] and [`LanceStore::optimize`] must not run concurrently
//! with each other (pruning deletes files an in-flight write may still need). Reads may
//! run alongside.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use futures::TryStreamExt;
use lancedb::arrow::arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch,
    RecordBatchIterator, RecordBatchReader, StringArray, UInt32Array,
};
use lancedb::arrow::arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use lancedb::index::scalar::BTreeIndexBuilder;
use lancedb::index::Index;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::{CompactionOptions, OptimizeAction, OptimizeOptions};
use lancedb::{Connection, Table};
use sofia_memory::{CallerModel, Episode, Fact, Speaker, Turn, DIM};

const TURNS: &str = "turns";
const EPISODES: &str = "episodes";
const FACTS: &str = "facts";
const CALLERS: &str = "callers";
/// Name of the BTree index on `caller` in every table.
const CALLER_INDEX: &str = "caller_idx";

/// Everything stored about one caller.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct CallerData {
    /// Sorted by (`unix_ms`, `call_id`, `seq`).
    pub turns: Vec<Turn>,
    /// Sorted by (`start_ms`, `call_id`, `first_seq`).
    pub episodes: Vec<Episode>,
    /// Sorted by (`unix_ms`, `id`).
    pub facts: Vec<Fact>,
    pub model: Option<CallerModel>,
}

/// One write of one caller's records. Upserts replace the stored row with the same id;
/// the `delete_*` ids are removed. An id both deleted and upserted ends up upserted.
#[derive(Default, Debug, Clone)]
pub struct WriteBatch {
    pub caller: String,
    pub turns: Vec<Turn>,
    pub episodes: Vec<Episode>,
    pub facts: Vec<Fact>,
    pub model: Option<CallerModel>,
    pub delete_turns: Vec<String>,
    pub delete_episodes: Vec<String>,
    pub delete_facts: Vec<String>,
}

/// Rows per table.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub turns: usize,
    pub episodes: usize,
    pub facts: usize,
    pub callers: usize,
}

/// Rows [`LanceStore::forget_caller`] removed, per table.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForgetReport {
    pub turns: usize,
    pub episodes: usize,
    pub facts: usize,
    pub callers: usize,
}

/// The episodic memory's LanceDB database. Cheap to clone (the tables are shared).
#[derive(Clone)]
pub struct LanceStore {
    dir: PathBuf,
    _db: Connection,
    turns: Table,
    episodes: Table,
    facts: Table,
    callers: Table,
    /// Whether each table (in [`LanceStore::tables`] order) has its `caller` index.
    indexed: Arc<[AtomicBool; 4]>,
}

impl std::fmt::Debug for LanceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanceStore")
            .field("dir", &self.dir)
            .finish()
    }
}

/// A SQL string literal (LanceDB filters are SQL; the dialect has no backslash escapes).
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Refuses an id that cannot be used safely in a filter or as a key: empty, or holding a
/// control character (NUL, newline, ...).
fn check_id(what: &str, id: &str) -> anyhow::Result<()> {
    if id.is_empty() {
        bail!("memory store: empty {what}");
    }
    if id.chars().any(char::is_control) {
        bail!("memory store: {what} {id:?} contains a control character");
    }
    Ok(())
}

fn caller_filter(caller: &str) -> String {
    format!("caller = {}", sql_string(caller))
}

fn ids_filter(caller: &str, ids: &[String]) -> String {
    let list: Vec<String> = ids.iter().map(|id| sql_string(id)).collect();
    format!("{} AND id IN ({})", caller_filter(caller), list.join(", "))
}

/// The item field of an embedding. Nullable, though no item is ever null: Lance stores
/// a `FixedSizeList` child as nullable whatever the schema said, so a table reopened from
/// disk reports nullable items and a non-nullable declaration would not match it.
fn embedding_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Float32, true))
}

fn embedding_field() -> Field {
    Field::new(
        "embedding",
        DataType::FixedSizeList(embedding_item(), DIM as i32),
        false,
    )
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn turns_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("id"),
        utf8("caller"),
        utf8("call_id"),
        Field::new("seq", DataType::UInt32, false),
        Field::new("unix_ms", DataType::Int64, false),
        utf8("speaker"),
        utf8("text"),
        embedding_field(),
        Field::new("surprise", DataType::Float32, false),
        Field::new("strength", DataType::Float32, false),
        Field::new("access_count", DataType::UInt32, false),
        Field::new("last_access_ms", DataType::Int64, false),
        utf8("episode_id"),
    ]))
}

fn episodes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("id"),
        utf8("caller"),
        utf8("call_id"),
        Field::new("first_seq", DataType::UInt32, false),
        Field::new("last_seq", DataType::UInt32, false),
        Field::new("start_ms", DataType::Int64, false),
        Field::new("end_ms", DataType::Int64, false),
        utf8("summary"),
        embedding_field(),
        Field::new("surprise", DataType::Float32, false),
        Field::new("strength", DataType::Float32, false),
    ]))
}

fn facts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("id"),
        utf8("caller"),
        utf8("slot"),
        utf8("value"),
        utf8("text"),
        Field::new("unix_ms", DataType::Int64, false),
        // A JSON array of turn ids.
        utf8("source_turns"),
        Field::new("superseded_by", DataType::Utf8, true),
        embedding_field(),
    ]))
}

fn callers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![utf8("caller"), utf8("model_json")]))
}

/// `rows` embeddings of [`DIM`] floats each as one `FixedSizeList` column.
fn embeddings<'a>(rows: impl Iterator<Item = &'a [f32]>) -> anyhow::Result<ArrayRef> {
    let mut flat = Vec::new();
    for row in rows {
        if row.len() != DIM {
            bail!(
                "memory store: embedding of {} floats, expected {DIM}",
                row.len()
            );
        }
        flat.extend_from_slice(row);
    }
    Ok(Arc::new(FixedSizeListArray::try_new(
        embedding_item(),
        DIM as i32,
        Arc::new(Float32Array::from(flat)),
        None,
    )?))
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn turns_batch(turns: &[&Turn]) -> anyhow::Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        turns_schema(),
        vec![
            strings(turns.iter().map(|t| t.id.as_str())),
            strings(turns.iter().map(|t| t.caller.as_str())),
            strings(turns.iter().map(|t| t.call_id.as_str())),
            Arc::new(UInt32Array::from_iter_values(turns.iter().map(|t| t.seq))),
            Arc::new(Int64Array::from_iter_values(
                turns.iter().map(|t| t.unix_ms),
            )),
            strings(turns.iter().map(|t| t.speaker.as_str())),
            strings(turns.iter().map(|t| t.text.as_str())),
            embeddings(turns.iter().map(|t| t.embedding.as_slice()))?,
            Arc::new(Float32Array::from_iter_values(
                turns.iter().map(|t| t.surprise),
            )),
            Arc::new(Float32Array::from_iter_values(
                turns.iter().map(|t| t.strength),
            )),
            Arc::new(UInt32Array::from_iter_values(
                turns.iter().map(|t| t.access_count),
            )),
            Arc::new(Int64Array::from_iter_values(
                turns.iter().map(|t| t.last_access_ms),
            )),
            strings(turns.iter().map(|t| t.episode_id.as_str())),
        ],
    )?)
}

fn episodes_batch(episodes: &[&Episode]) -> anyhow::Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        episodes_schema(),
        vec![
            strings(episodes.iter().map(|e| e.id.as_str())),
            strings(episodes.iter().map(|e| e.caller.as_str())),
            strings(episodes.iter().map(|e| e.call_id.as_str())),
            Arc::new(UInt32Array::from_iter_values(
                episodes.iter().map(|e| e.first_seq),
            )),
            Arc::new(UInt32Array::from_iter_values(
                episodes.iter().map(|e| e.last_seq),
            )),
            Arc::new(Int64Array::from_iter_values(
                episodes.iter().map(|e| e.start_ms),
            )),
            Arc::new(Int64Array::from_iter_values(
                episodes.iter().map(|e| e.end_ms),
            )),
            strings(episodes.iter().map(|e| e.summary.as_str())),
            embeddings(episodes.iter().map(|e| e.embedding.as_slice()))?,
            Arc::new(Float32Array::from_iter_values(
                episodes.iter().map(|e| e.surprise),
            )),
            Arc::new(Float32Array::from_iter_values(
                episodes.iter().map(|e| e.strength),
            )),
        ],
    )?)
}

fn facts_batch(facts: &[&Fact]) -> anyhow::Result<RecordBatch> {
    let zeros = vec![0.0f32; DIM];
    let sources = facts
        .iter()
        .map(|f| serde_json::to_string(&f.source_turns))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(
        facts_schema(),
        vec![
            strings(facts.iter().map(|f| f.id.as_str())),
            strings(facts.iter().map(|f| f.caller.as_str())),
            strings(facts.iter().map(|f| f.slot.as_str())),
            strings(facts.iter().map(|f| f.value.as_str())),
            strings(facts.iter().map(|f| f.text.as_str())),
            Arc::new(Int64Array::from_iter_values(
                facts.iter().map(|f| f.unix_ms),
            )),
            strings(sources.iter().map(String::as_str)),
            Arc::new(StringArray::from_iter(
                facts.iter().map(|f| f.superseded_by.as_deref()),
            )),
            embeddings(facts.iter().map(|f| {
                if f.embedding.is_empty() {
                    zeros.as_slice()
                } else {
                    f.embedding.as_slice()
                }
            }))?,
        ],
    )?)
}

fn model_batch(model: &CallerModel) -> anyhow::Result<RecordBatch> {
    let json = serde_json::to_string(model)?;
    Ok(RecordBatch::try_new(
        callers_schema(),
        vec![
            strings(std::iter::once(model.caller.as_str())),
            strings(std::iter::once(json.as_str())),
        ],
    )?)
}

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> anyhow::Result<&'a T> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| anyhow!("memory store: a table lacks column {name}"))?;
    col.as_any().downcast_ref::<T>().ok_or_else(|| {
        anyhow!(
            "memory store: column {name} has type {}, not the expected one",
            col.data_type()
        )
    })
}

fn vector_at(col: &FixedSizeListArray, i: usize) -> anyhow::Result<Vec<f32>> {
    let row = col.value(i);
    let floats = row
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| anyhow!("memory store: embedding items are not Float32"))?;
    Ok(floats.values().to_vec())
}

fn read_turns(batch: &RecordBatch) -> anyhow::Result<Vec<Turn>> {
    let id = column::<StringArray>(batch, "id")?;
    let caller = column::<StringArray>(batch, "caller")?;
    let call_id = column::<StringArray>(batch, "call_id")?;
    let seq = column::<UInt32Array>(batch, "seq")?;
    let unix_ms = column::<Int64Array>(batch, "unix_ms")?;
    let speaker = column::<StringArray>(batch, "speaker")?;
    let text = column::<StringArray>(batch, "text")?;
    let embedding = column::<FixedSizeListArray>(batch, "embedding")?;
    let surprise = column::<Float32Array>(batch, "surprise")?;
    let strength = column::<Float32Array>(batch, "strength")?;
    let access_count = column::<UInt32Array>(batch, "access_count")?;
    let last_access_ms = column::<Int64Array>(batch, "last_access_ms")?;
    let episode_id = column::<StringArray>(batch, "episode_id")?;
    (0..batch.num_rows())
        .map(|i| {
            Ok(Turn {
                id: id.value(i).to_string(),
                caller: caller.value(i).to_string(),
                call_id: call_id.value(i).to_string(),
                seq: seq.value(i),
                unix_ms: unix_ms.value(i),
                speaker: Speaker::parse(speaker.value(i)).ok_or_else(|| {
                    anyhow!("memory store: unknown speaker {:?}", speaker.value(i))
                })?,
                text: text.value(i).to_string(),
                embedding: vector_at(embedding, i)?,
                surprise: surprise.value(i),
                strength: strength.value(i),
                access_count: access_count.value(i),
                last_access_ms: last_access_ms.value(i),
                episode_id: episode_id.value(i).to_string(),
            })
        })
        .collect()
}

fn read_episodes(batch: &RecordBatch) -> anyhow::Result<Vec<Episode>> {
    let id = column::<StringArray>(batch, "id")?;
    let caller = column::<StringArray>(batch, "caller")?;
    let call_id = column::<StringArray>(batch, "call_id")?;
    let first_seq = column::<UInt32Array>(batch, "first_seq")?;
    let last_seq = column::<UInt32Array>(batch, "last_seq")?;
    let start_ms = column::<Int64Array>(batch, "start_ms")?;
    let end_ms = column::<Int64Array>(batch, "end_ms")?;
    let summary = column::<StringArray>(batch, "summary")?;
    let embedding = column::<FixedSizeListArray>(batch, "embedding")?;
    let surprise = column::<Float32Array>(batch, "surprise")?;
    let strength = column::<Float32Array>(batch, "strength")?;
    (0..batch.num_rows())
        .map(|i| {
            Ok(Episode {
                id: id.value(i).to_string(),
                caller: caller.value(i).to_string(),
                call_id: call_id.value(i).to_string(),
                first_seq: first_seq.value(i),
                last_seq: last_seq.value(i),
                start_ms: start_ms.value(i),
                end_ms: end_ms.value(i),
                summary: summary.value(i).to_string(),
                embedding: vector_at(embedding, i)?,
                surprise: surprise.value(i),
                strength: strength.value(i),
            })
        })
        .collect()
}

fn read_facts(batch: &RecordBatch) -> anyhow::Result<Vec<Fact>> {
    let id = column::<StringArray>(batch, "id")?;
    let caller = column::<StringArray>(batch, "caller")?;
    let slot = column::<StringArray>(batch, "slot")?;
    let value = column::<StringArray>(batch, "value")?;
    let text = column::<StringArray>(batch, "text")?;
    let unix_ms = column::<Int64Array>(batch, "unix_ms")?;
    let source_turns = column::<StringArray>(batch, "source_turns")?;
    let superseded_by = column::<StringArray>(batch, "superseded_by")?;
    let embedding = column::<FixedSizeListArray>(batch, "embedding")?;
    (0..batch.num_rows())
        .map(|i| {
            let mut vector = vector_at(embedding, i)?;
            if vector.iter().all(|x| *x == 0.0) {
                // Stored as zeros because it was not computed yet.
                vector.clear();
            }
            Ok(Fact {
                id: id.value(i).to_string(),
                caller: caller.value(i).to_string(),
                slot: slot.value(i).to_string(),
                value: value.value(i).to_string(),
                text: text.value(i).to_string(),
                unix_ms: unix_ms.value(i),
                source_turns: serde_json::from_str(source_turns.value(i)).with_context(|| {
                    format!("memory store: source_turns of fact {:?}", id.value(i))
                })?,
                superseded_by: (!superseded_by.is_null(i))
                    .then(|| superseded_by.value(i).to_string()),
                embedding: vector,
            })
        })
        .collect()
}

fn read_models(batch: &RecordBatch) -> anyhow::Result<Vec<CallerModel>> {
    let caller = column::<StringArray>(batch, "caller")?;
    let json = column::<StringArray>(batch, "model_json")?;
    (0..batch.num_rows())
        .map(|i| {
            serde_json::from_str(json.value(i))
                .with_context(|| format!("memory store: model of caller {:?}", caller.value(i)))
        })
        .collect()
}

/// The records of `records` with distinct ids, the last of each id winning (a merge
/// insert with two source rows for one key is undefined).
fn last_by_id<T>(records: &[T], id: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<&T> = Vec::with_capacity(records.len());
    for record in records {
        match position.get(id(record)) {
            Some(&at) => out[at] = record,
            None => {
                position.insert(id(record), out.len());
                out.push(record);
            }
        }
    }
    out
}

async fn open_table(db: &Connection, name: &str, schema: SchemaRef) -> anyhow::Result<Table> {
    let names = db.table_names().execute().await?;
    if !names.iter().any(|n| n == name) {
        return Ok(db.create_empty_table(name, schema).execute().await?);
    }
    let table = db.open_table(name).execute().await?;
    let stored = table.schema().await?;
    for field in schema.fields() {
        let found = stored.field_with_name(field.name()).map_err(|_| {
            anyhow!(
                "memory store: table {name} lacks column {} (written by another version?)",
                field.name()
            )
        })?;
        if found.data_type() != field.data_type() {
            bail!(
                "memory store: column {name}.{} is {}, expected {}",
                field.name(),
                found.data_type(),
                field.data_type()
            );
        }
    }
    Ok(table)
}

async fn has_caller_index(table: &Table) -> anyhow::Result<bool> {
    Ok(table
        .list_indices()
        .await?
        .iter()
        .any(|index| index.columns.iter().any(|c| c == "caller")))
}

async fn query_all(table: &Table, filter: Option<String>) -> anyhow::Result<Vec<RecordBatch>> {
    let mut query = table.query();
    if let Some(filter) = filter {
        query = query.only_if(filter);
    }
    Ok(query.execute().await?.try_collect().await?)
}

impl LanceStore {
    /// Opens (creating if needed) the database at `dir` with its four tables.
    pub async fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let uri = dir
            .to_str()
            .ok_or_else(|| anyhow!("{} is not UTF-8", dir.display()))?;
        let db = lancedb::connect(uri).execute().await?;
        let turns = open_table(&db, TURNS, turns_schema()).await?;
        let episodes = open_table(&db, EPISODES, episodes_schema()).await?;
        let facts = open_table(&db, FACTS, facts_schema()).await?;
        let callers = open_table(&db, CALLERS, callers_schema()).await?;
        let indexed = Arc::new([
            AtomicBool::new(has_caller_index(&turns).await?),
            AtomicBool::new(has_caller_index(&episodes).await?),
            AtomicBool::new(has_caller_index(&facts).await?),
            AtomicBool::new(has_caller_index(&callers).await?),
        ]);
        Ok(Self {
            dir: dir.to_path_buf(),
            _db: db,
            turns,
            episodes,
            facts,
            callers,
            indexed,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tables(&self) -> [&Table; 4] {
        [&self.turns, &self.episodes, &self.facts, &self.callers]
    }

    /// Creates the `caller` index of table `i` if it is missing and the table has rows.
    async fn ensure_index(&self, i: usize) -> anyhow::Result<()> {
        if self.indexed[i].load(Ordering::Acquire) {
            return Ok(());
        }
        let table = self.tables()[i];
        if has_caller_index(table).await? {
            self.indexed[i].store(true, Ordering::Release);
            return Ok(());
        }
        if table.count_rows(None).await? == 0 {
            return Ok(());
        }
        table
            .create_index(&["caller"], Index::BTree(BTreeIndexBuilder::default()))
            .name(CALLER_INDEX.to_string())
            .execute()
            .await
            .with_context(|| format!("creating the caller index of {}", table.name()))?;
        self.indexed[i].store(true, Ordering::Release);
        Ok(())
    }

    /// Everything stored about one caller.
    pub async fn load_caller(&self, caller: &str) -> anyhow::Result<CallerData> {
        check_id("caller", caller)?;
        let filter = caller_filter(caller);
        let mut data = CallerData::default();
        for batch in query_all(&self.turns, Some(filter.clone())).await? {
            data.turns.extend(read_turns(&batch)?);
        }
        for batch in query_all(&self.episodes, Some(filter.clone())).await? {
            data.episodes.extend(read_episodes(&batch)?);
        }
        for batch in query_all(&self.facts, Some(filter.clone())).await? {
            data.facts.extend(read_facts(&batch)?);
        }
        let mut models = Vec::new();
        for batch in query_all(&self.callers, Some(filter)).await? {
            models.extend(read_models(&batch)?);
        }
        // Defence in depth: a filter that matched too much must not leak another caller.
        if data.turns.iter().any(|t| t.caller != caller)
            || data.episodes.iter().any(|e| e.caller != caller)
            || data.facts.iter().any(|f| f.caller != caller)
            || models.iter().any(|m| m.caller != caller)
        {
            bail!("memory store: the filter for caller {caller:?} matched other callers");
        }
        if models.len() > 1 {
            bail!(
                "memory store: {} models stored for caller {caller:?}",
                models.len()
            );
        }
        data.model = models.pop();
        data.turns
            .sort_by(|a, b| (a.unix_ms, &a.call_id, a.seq).cmp(&(b.unix_ms, &b.call_id, b.seq)));
        data.episodes.sort_by(|a, b| {
            (a.start_ms, &a.call_id, a.first_seq).cmp(&(b.start_ms, &b.call_id, b.first_seq))
        });
        data.facts
            .sort_by(|a, b| (a.unix_ms, &a.id).cmp(&(b.unix_ms, &b.id)));
        Ok(data)
    }

    /// Upserts `batch` (if any) into table `i` keyed on `on` and deletes the `deletes`
    /// ids of `caller`, in one commit.
    async fn apply(
        &self,
        i: usize,
        on: &[&str],
        batch: Option<RecordBatch>,
        caller: &str,
        deletes: &[String],
    ) -> anyhow::Result<()> {
        let table = self.tables()[i];
        match batch {
            Some(batch) => {
                let schema = batch.schema();
                let reader: Box<dyn RecordBatchReader + Send> =
                    Box::new(RecordBatchIterator::new(vec![Ok(batch)], schema));
                let mut merge = table.merge_insert(on);
                merge
                    .when_matched_update_all(None)
                    .when_not_matched_insert_all();
                if !deletes.is_empty() {
                    // Target rows absent from the source that match the filter go in the
                    // same commit.
                    merge.when_not_matched_by_source_delete(Some(ids_filter(caller, deletes)));
                }
                merge
                    .execute(reader)
                    .await
                    .with_context(|| format!("writing to {}", table.name()))?;
            }
            None if !deletes.is_empty() => {
                table
                    .delete(ids_filter(caller, deletes).as_str())
                    .await
                    .with_context(|| format!("deleting from {}", table.name()))?;
            }
            None => return Ok(()),
        }
        self.ensure_index(i).await
    }

    /// Applies one batch of one caller, one commit per table touched (a merge insert that
    /// also deletes, or a plain delete).
    /// A record of another caller, an id that is empty or holds a control character, or an
    /// embedding of the wrong size is an error and nothing is written.
    pub async fn write(&self, batch: WriteBatch) -> anyhow::Result<()> {
        let caller = batch.caller.as_str();
        check_id("caller", caller)?;
        let foreign = |kind: &str, id: &str, owner: &str| -> anyhow::Result<()> {
            if owner != caller {
                bail!("memory store: {kind} {id:?} belongs to caller {owner:?}, not to {caller:?}");
            }
            check_id(kind, id)
        };
        for t in &batch.turns {
            foreign("turn", &t.id, &t.caller)?;
            if t.embedding.len() != DIM {
                bail!(
                    "memory store: turn {:?} has {} floats",
                    t.id,
                    t.embedding.len()
                );
            }
        }
        for e in &batch.episodes {
            foreign("episode", &e.id, &e.caller)?;
            if e.embedding.len() != DIM {
                bail!(
                    "memory store: episode {:?} has {} floats",
                    e.id,
                    e.embedding.len()
                );
            }
        }
        for f in &batch.facts {
            foreign("fact", &f.id, &f.caller)?;
            if !f.embedding.is_empty() && f.embedding.len() != DIM {
                bail!(
                    "memory store: fact {:?} has {} floats",
                    f.id,
                    f.embedding.len()
                );
            }
        }
        if let Some(model) = &batch.model {
            foreign("model", &model.caller, &model.caller)?;
        }
        for id in batch
            .delete_turns
            .iter()
            .chain(&batch.delete_episodes)
            .chain(&batch.delete_facts)
        {
            check_id("id to delete", id)?;
        }

        // Build every batch before writing anything, so a bad record writes nothing.
        let turns = last_by_id(&batch.turns, |t| t.id.as_str());
        let episodes = last_by_id(&batch.episodes, |e| e.id.as_str());
        let facts = last_by_id(&batch.facts, |f| f.id.as_str());
        let turns = (!turns.is_empty())
            .then(|| turns_batch(&turns))
            .transpose()?;
        let episodes = (!episodes.is_empty())
            .then(|| episodes_batch(&episodes))
            .transpose()?;
        let facts = (!facts.is_empty())
            .then(|| facts_batch(&facts))
            .transpose()?;
        let model = batch.model.as_ref().map(model_batch).transpose()?;

        let key = ["caller", "id"];
        self.apply(0, &key, turns, caller, &batch.delete_turns)
            .await?;
        self.apply(1, &key, episodes, caller, &batch.delete_episodes)
            .await?;
        self.apply(2, &key, facts, caller, &batch.delete_facts)
            .await?;
        self.apply(3, &["caller"], model, caller, &[]).await?;
        Ok(())
    }

    /// Deletes everything about `caller` from every table, then rewrites every fragment
    /// that holds deleted rows and removes all old versions and unreferenced files, so no
    /// file under the directory still holds the caller's data.
    pub async fn forget_caller(&self, caller: &str) -> anyhow::Result<ForgetReport> {
        check_id("caller", caller)?;
        let filter = caller_filter(caller);
        let mut removed = [0usize; 4];
        for (i, table) in self.tables().into_iter().enumerate() {
            // A delete that matches nothing still commits a version; skip it.
            if table.count_rows(Some(filter.clone())).await? > 0 {
                let result = table
                    .delete(filter.as_str())
                    .await
                    .with_context(|| format!("forgetting {caller:?} in {}", table.name()))?;
                removed[i] = result.num_deleted_rows as usize;
            }
        }
        for table in self.tables() {
            table
                .optimize(OptimizeAction::Compact {
                    options: CompactionOptions {
                        // Rewrite every fragment with a deleted row, however few.
                        materialize_deletions: true,
                        materialize_deletions_threshold: 0.0,
                        ..CompactionOptions::default()
                    },
                    remap_options: None,
                })
                .await
                .with_context(|| format!("compacting {}", table.name()))?;
            table
                .optimize(OptimizeAction::Index(OptimizeOptions::default()))
                .await
                .with_context(|| format!("optimising the indexes of {}", table.name()))?;
            table
                .optimize(OptimizeAction::Prune {
                    older_than: Some(lancedb::table::Duration::zero()),
                    delete_unverified: Some(true),
                    error_if_tagged_old_versions: Some(false),
                })
                .await
                .with_context(|| format!("pruning {}", table.name()))?;
        }
        Ok(ForgetReport {
            turns: removed[0],
            episodes: removed[1],
            facts: removed[2],
            callers: removed[3],
        })
    }

    /// Every caller with anything stored, with their number of turns, sorted by caller.
    pub async fn callers(&self) -> anyhow::Result<Vec<(String, usize)>> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (i, table) in self.tables().into_iter().enumerate() {
            let batches: Vec<RecordBatch> = table
                .query()
                .select(Select::columns(&["caller"]))
                .execute()
                .await?
                .try_collect()
                .await?;
            for batch in &batches {
                let callers = column::<StringArray>(batch, "caller")?;
                for c in callers.iter().flatten() {
                    let n = counts.entry(c.to_string()).or_insert(0);
                    if i == 0 {
                        *n += 1;
                    }
                }
            }
        }
        Ok(counts.into_iter().collect())
    }

    /// Compacts every table, creates missing `caller` indexes and brings the existing ones
    /// up to date, then removes versions older than `keep_versions_for`.
    pub async fn optimize(&self, keep_versions_for: std::time::Duration) -> anyhow::Result<()> {
        let keep = lancedb::table::Duration::from_std(keep_versions_for)
            .context("keep_versions_for is out of range")?;
        for (i, table) in self.tables().into_iter().enumerate() {
            table
                .optimize(OptimizeAction::Compact {
                    options: CompactionOptions::default(),
                    remap_options: None,
                })
                .await
                .with_context(|| format!("compacting {}", table.name()))?;
            self.ensure_index(i).await?;
            table
                .optimize(OptimizeAction::Index(OptimizeOptions::default()))
                .await
                .with_context(|| format!("optimising the indexes of {}", table.name()))?;
            table
                .optimize(OptimizeAction::Prune {
                    older_than: Some(keep),
                    delete_unverified: None,
                    error_if_tagged_old_versions: Some(false),
                })
                .await
                .with_context(|| format!("pruning {}", table.name()))?;
        }
        Ok(())
    }

    /// Rows per table.
    pub async fn counts(&self) -> anyhow::Result<Counts> {
        Ok(Counts {
            turns: self.turns.count_rows(None).await?,
            episodes: self.episodes.count_rows(None).await?,
            facts: self.facts.count_rows(None).await?,
            callers: self.callers.count_rows(None).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_strings_double_quotes() {
        assert_eq!(sql_string("x' OR '1'='1"), "'x'' OR ''1''=''1'");
        assert_eq!(sql_string(r"a\b"), r"'a\b'");
    }

    #[test]
    fn ids_with_control_characters_are_refused() {
        assert!(check_id("caller", "1000").is_ok());
        assert!(check_id("caller", "x' OR '1'='1").is_ok());
        assert!(check_id("caller", "").is_err());
        assert!(check_id("caller", "a\0b").is_err());
        assert!(check_id("caller", "a\nb").is_err());
        assert!(check_id("caller", "a\u{7f}").is_err());
        assert!(check_id("caller", "a\u{85}").is_err());
    }

    #[test]
    fn last_record_of_an_id_wins() {
        let records = [("a", 1), ("b", 2), ("a", 3)];
        let kept = last_by_id(&records, |r| r.0);
        assert_eq!(kept, vec![&("a", 3), &("b", 2)]);
    }
}
