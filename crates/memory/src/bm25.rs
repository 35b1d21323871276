//! Okapi BM25 over one caller's documents (turns or episodes), kept incrementally: the
//! lexical leg of stage-1 retrieval. A caller's working set is small enough (hundreds to
//! tens of thousands of turns) that an in-memory inverted index answers in microseconds
//! to a millisecond, and scoring it here gives us the whole candidate pool with scores,
//! which score fusion needs.

use std::collections::HashMap;

use crate::text::Analyzer;

/// BM25 parameters (the usual k1 = 1.2, b = 0.75).
const K1: f32 = 1.2;
const B: f32 = 0.75;

#[derive(Debug, Default)]
pub struct Bm25 {
    analyzer: Analyzer,
    /// term -> (document, term frequency)
    postings: HashMap<String, Vec<(usize, u32)>>,
    /// Length in terms of each document; `None` once removed.
    lengths: Vec<Option<u32>>,
    live: usize,
    total_len: u64,
}

impl Bm25 {
    /// Adds document number `doc` (documents are numbered by the caller, densely, from 0).
    pub fn insert(&mut self, doc: usize, text: &str) {
        let terms = self.analyzer.terms(text);
        let mut tf: HashMap<String, u32> = HashMap::new();
        for t in &terms {
            *tf.entry(t.clone()).or_default() += 1;
        }
        for (term, n) in tf {
            self.postings.entry(term).or_default().push((doc, n));
        }
        if self.lengths.len() <= doc {
            self.lengths.resize(doc + 1, None);
        }
        if self.lengths[doc].is_none() {
            self.live += 1;
        }
        self.lengths[doc] = Some(terms.len() as u32);
        self.total_len += terms.len() as u64;
    }

    /// Forgets a document: it is never returned again.
    pub fn remove(&mut self, doc: usize) {
        if let Some(Some(len)) = self.lengths.get(doc).copied() {
            self.lengths[doc] = None;
            self.live -= 1;
            self.total_len -= u64::from(len);
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The `limit` best documents for `query`, best first, with their BM25 scores (> 0).
    pub fn search(&self, query: &str, limit: usize) -> Vec<(usize, f32)> {
        if self.live == 0 || limit == 0 {
            return Vec::new();
        }
        let avg_len = self.total_len as f32 / self.live as f32;
        let mut terms = self.analyzer.terms(query);
        terms.sort();
        terms.dedup();
        let mut scores: HashMap<usize, f32> = HashMap::new();
        for term in &terms {
            let Some(postings) = self.postings.get(term) else {
                continue;
            };
            let live: Vec<&(usize, u32)> = postings
                .iter()
                .filter(|(d, _)| self.lengths.get(*d).is_some_and(|l| l.is_some()))
                .collect();
            let n = live.len() as f32;
            if n == 0.0 {
                continue;
            }
            let idf = (1.0 + (self.live as f32 - n + 0.5) / (n + 0.5)).ln();
            for &&(doc, tf) in &live {
                let len = self.lengths[doc].unwrap_or(0) as f32;
                let tf = tf as f32;
                let norm = tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg_len.max(1.0)));
                *scores.entry(doc).or_default() += idf * norm;
            }
        }
        let mut ranked: Vec<(usize, f32)> = scores.into_iter().filter(|(_, s)| *s > 0.0).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(limit);
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarer_matching_terms_rank_higher() {
        let mut idx = Bm25::default();
        idx.insert(0, "I went to the park with the dog");
        idx.insert(1, "The plumber comes on Thursday to fix the sink");
        idx.insert(2, "I walked the dog again");
        let hits = idx.search("when is the plumber coming?", 10);
        assert_eq!(hits[0].0, 1);
        assert_eq!(
            hits.len(),
            1,
            "only the plumber turn shares a term: {hits:?}"
        );
        let dog = idx.search("dog park", 10);
        assert_eq!(dog[0].0, 0, "the turn with both terms wins: {dog:?}");
        assert_eq!(dog.len(), 2);
    }

    #[test]
    fn stemming_matches_inflections() {
        let mut idx = Bm25::default();
        idx.insert(0, "She paints landscapes");
        idx.insert(1, "We baked bread");
        assert_eq!(idx.search("painting", 5)[0].0, 0);
    }

    #[test]
    fn removed_documents_are_never_returned() {
        let mut idx = Bm25::default();
        idx.insert(0, "Paris trip in May");
        idx.insert(1, "Berlin trip in June");
        idx.remove(0);
        let hits = idx.search("Paris trip", 5);
        assert!(hits.iter().all(|(d, _)| *d != 0), "{hits:?}");
        assert_eq!(idx.len(), 1);
    }
}
