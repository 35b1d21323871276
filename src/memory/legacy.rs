//! Import of the flat turn log earlier versions kept in `<data_dir>/memory.lance` (table
//! `turns`: caller, call_id, unix_ms, role, text), so an upgrade keeps what callers said.
//! Read once when the episodic store is first opened; the old directory is then renamed
//! to `memory.lance.imported` (kept, not deleted: the operator removes it).

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::TryStreamExt;
use lancedb::arrow::arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use lancedb::query::ExecutableQuery;
use sofia_voice::{Role, TurnRecord};

/// The old store next to the new one, if there is one to import.
pub fn pending(memory_dir: &Path) -> Option<PathBuf> {
    let old = memory_dir.parent()?.join("memory.lance");
    old.join("turns.lance").is_dir().then_some(old)
}

/// What the old store kept that the new one never does: the agent's canned prompts and
/// its welcome-back greetings (made from memory itself).
fn canned(turn: &TurnRecord) -> bool {
    turn.role == Role::Agent
        && (sofia_voice::Prompt::ALL
            .iter()
            .any(|p| p.text() == turn.text)
            || turn.text.starts_with("Welcome back"))
}

/// Every turn of the old store worth keeping, oldest first (skipping rows it cannot
/// read and canned prompts).
pub async fn read_turns(old: &Path) -> anyhow::Result<Vec<TurnRecord>> {
    let uri = old
        .to_str()
        .with_context(|| format!("{} is not UTF-8", old.display()))?;
    let db = lancedb::connect(uri).execute().await?;
    let table = db.open_table("turns").execute().await?;
    let batches: Vec<RecordBatch> = table.query().execute().await?.try_collect().await?;
    let mut turns = Vec::new();
    for batch in &batches {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .with_context(|| format!("the old memory table lacks column {name}"))
        };
        let (caller, call_id, role, said) = (
            text("caller")?,
            text("call_id")?,
            text("role")?,
            text("text")?,
        );
        let unix_ms = batch
            .column_by_name("unix_ms")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .context("the old memory table lacks column unix_ms")?;
        for i in 0..batch.num_rows() {
            let Some(role) = Role::parse(role.value(i)) else {
                continue;
            };
            turns.push(TurnRecord {
                caller: caller.value(i).to_string(),
                call_id: call_id.value(i).to_string(),
                unix_ms: unix_ms.value(i),
                role,
                text: said.value(i).to_string(),
            });
        }
    }
    turns.retain(|t| !canned(t));
    turns.sort_by_key(|t| t.unix_ms);
    Ok(turns)
}
