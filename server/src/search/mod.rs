//! Full-text search of documents by title and text, for the list page: a tantivy index kept in
//! memory, fed by the indexer (`indexer.rs`) from the change feed, off the rooms' hot path.
//!
//! Why tantivy, and in memory: it is the well-kept Rust full-text engine (tokenizing, BM25
//! ranking, query parsing, snippets with highlights), built here without its mmap, zstd and
//! stemming features. The index lives in RAM and is rebuilt from the documents at every start,
//! so it needs no files, no fsync and no repair after a crash, and can never disagree with the
//! store for longer than the indexer's debounce.
//!
//! One document per Weft document: `id` (exact, stored), `title` and `body` (tokenized,
//! stored for the snippet). A title match weighs twice a text match.

mod indexer;

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, Value, STORED, STRING, TEXT};
use tantivy::snippet::SnippetGenerator;
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::Notify;

use crate::room::registry::RoomContext;

use indexer::run_indexer;

/// The writer's memory budget: tantivy's minimum; documents are added in small batches.
const WRITER_BUDGET: usize = 15_000_000;
/// Longest snippet, in characters.
const SNIPPET_CHARS: usize = 180;

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
#[error("search index: {0}")]
pub(crate) struct SearchError(#[from] tantivy::TantivyError);

/// One match.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hit {
    /// The document id.
    pub(crate) id: String,
    /// Its title as indexed.
    pub(crate) title: String,
    /// Relevance (BM25, title matches boosted); higher is better.
    pub(crate) score: f32,
    /// A piece of the text around the best match (empty when only the title matched).
    pub(crate) snippet: String,
    /// Byte ranges of `snippet` that matched the query.
    pub(crate) highlighted: Vec<Range<usize>>,
}

/// The documents' search index, and what the indexer still owes it.
pub(crate) struct Search {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    id: Field,
    title: Field,
    body: Field,
    /// Documents changed outside the feed's view (a rename), to index again.
    pending: Mutex<HashSet<String>>,
    /// Wakes the indexer for `pending`.
    wake: Notify,
}

impl Search {
    /// An empty index in memory.
    pub(crate) fn new() -> Result<Arc<Self>, SearchError> {
        let mut schema = Schema::builder();
        let id = schema.add_text_field("id", STRING | STORED);
        let title = schema.add_text_field("title", TEXT | STORED);
        let body = schema.add_text_field("body", TEXT | STORED);
        let index = Index::create_in_ram(schema.build());
        let writer = index.writer_with_num_threads(1, WRITER_BUDGET)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Arc::new(Self {
            index,
            reader,
            writer: Mutex::new(writer),
            id,
            title,
            body,
            pending: Mutex::default(),
            wake: Notify::new(),
        }))
    }

    /// A new index for the documents of `ctx`, built and kept current by an indexer task
    /// that stops with the server. If tantivy cannot even create an empty index in memory
    /// (it cannot run here at all), that is a bug worth stopping for.
    pub(crate) fn start(ctx: &Arc<RoomContext>) -> Arc<Self> {
        let search = Self::new().expect("creating an empty in-memory search index");
        ctx.shutdown.spawn(run_indexer(
            search.clone(),
            ctx.clone(),
            ctx.shutdown.clone(),
        ));
        search
    }

    /// Replaces (`Some`) or removes (`None`) documents, then makes the change visible to
    /// searches. Blocks: run it off the async workers.
    pub(crate) fn apply(
        &self,
        changes: Vec<(String, Option<(String, String)>)>,
    ) -> Result<(), SearchError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        for (id, doc) in changes {
            writer.delete_term(Term::from_field_text(self.id, &id));
            if let Some((title, body)) = doc {
                writer.add_document(doc!(self.id => id, self.title => title, self.body => body))?;
            }
        }
        writer.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// The best matches of `query` (words; `"a phrase"`, `-not`, `title:word` work too) among
    /// the documents `may_read` allows, at most `limit`, best first. Blocks.
    pub(crate) fn search(
        &self,
        query: &str,
        limit: usize,
        may_read: impl Fn(&str) -> bool,
    ) -> Result<Vec<Hit>, SearchError> {
        let mut parser = QueryParser::for_index(&self.index, vec![self.title, self.body]);
        parser.set_field_boost(self.title, 2.0);
        parser.set_conjunction_by_default();
        // Lenient: whatever a person types is a query; broken syntax is read as words.
        let (query, _) = parser.parse_query_lenient(query);
        let searcher = self.reader.searcher();
        // Over-fetch so that documents the caller may not read do not empty the page.
        let top = searcher.search(
            &query,
            &TopDocs::with_limit(limit.saturating_mul(4).max(50)).order_by_score(),
        )?;
        let mut snippets = SnippetGenerator::create(&searcher, &*query, self.body)?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut hits = Vec::new();
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let id = text(self.id);
            if !may_read(&id) {
                continue;
            }
            let snippet = snippets.snippet_from_doc(&doc);
            hits.push(Hit {
                title: text(self.title),
                score,
                snippet: snippet.fragment().to_owned(),
                highlighted: snippet.highlighted().to_vec(),
                id,
            });
            if hits.len() == limit {
                break;
            }
        }
        Ok(hits)
    }

    /// Asks the indexer to read `id` again (its title changed, which the feed does not say).
    pub(crate) fn touch(&self, id: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned());
        self.wake.notify_one();
    }

    /// The documents touched since the last call.
    fn take_pending(&self) -> HashSet<String> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Matches by title and by text, ranked, with a highlighted snippet; replaced and removed
    /// documents are found no more; documents the caller may not read are left out.
    #[test]
    fn finds_by_title_and_text() {
        let search = Search::new().expect("index");
        search
            .apply(vec![
                (
                    "a".into(),
                    Some(("Garden plan".into(), "Tomatoes in May.".into())),
                ),
                (
                    "b".into(),
                    Some(("Notes".into(), "The garden needs water.".into())),
                ),
                ("c".into(), Some(("Recipes".into(), "Tomato soup".into()))),
            ])
            .expect("apply");
        let all = |_: &str| true;
        let ids = |hits: Vec<Hit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
        assert_eq!(
            ids(search.search("garden", 10, all).expect("search")),
            ["a", "b"]
        );
        let hit = search.search("water", 10, all).expect("search").remove(0);
        assert_eq!(
            (hit.id.as_str(), hit.snippet.as_str()),
            ("b", "The garden needs water")
        );
        assert_eq!(&hit.snippet[hit.highlighted[0].clone()], "water");
        assert_eq!(
            ids(search.search("garden", 10, |id| id == "b").expect("search")),
            ["b"]
        );
        search
            .apply(vec![
                ("a".into(), Some(("Orchard".into(), "Apples".into()))),
                ("b".into(), None),
            ])
            .expect("apply");
        assert_eq!(
            ids(search.search("garden", 10, all).expect("search")),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(search.search("orchard", 10, all).expect("search")),
            ["a"]
        );
        assert!(
            search.search("\"unbalanced", 10, all).is_ok(),
            "any text is a query"
        );
    }
}
