//! all-MiniLM-L6-v2 through `MiniLm` on the real model files: unit 384-dim vectors,
//! related sentences closer than unrelated ones, batching that does not change the
//! result, and inputs at both extremes of length.

use std::sync::OnceLock;

use sofia_phone::memory::embed::{MiniLm, DIM};
use sofia_phone::voice::VoiceModels;

/// The model `models fetch` put in the built-in profile's models directory, loaded once
/// and shared by the tests (it is `Sync`).
fn model() -> &'static MiniLm {
    static MODEL: OnceLock<MiniLm> = OnceLock::new();
    MODEL.get_or_init(|| {
        let models_dir =
            sofia_phone::config::load(None, &sofia_phone::config::ProcessEnv, &Default::default())
                .expect("the built-in profile loads")
                .models_dir;
        MiniLm::load(&VoiceModels::under(&models_dir).minilm_dir)
            .unwrap_or_else(|e| panic!("{e:#}"))
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn long_text() -> String {
    // 2000 words, far past the 256-token window.
    let sentence = "The caller said she moved to Denver with her family.";
    assert_eq!(sentence.split_whitespace().count(), 10);
    vec![sentence; 200].join(" ")
}

#[test]
fn embeddings_are_unit_vectors_of_384_dims() {
    let v = model().embed_one("I moved to Denver last spring.").unwrap();
    assert_eq!(v.len(), DIM);
    assert!((norm(&v) - 1.0).abs() < 1e-4, "norm {}", norm(&v));
}

#[test]
fn matches_the_reference_pooling() {
    // First dimensions from an independent NumPy forward pass of the same weights with
    // mean pooling over the mask and L2 normalisation.
    let v = model().embed_one("moved to Denver").unwrap();
    let reference = [
        0.1224598, -0.1251726, 0.0389743, 0.0160387, 0.03143, -0.0170124,
    ];
    for (i, (got, want)) in v.iter().zip(reference).enumerate() {
        assert!((got - want).abs() < 1e-4, "dim {i}: {got} vs {want}");
    }
}

#[test]
fn related_sentences_are_closer_than_unrelated_ones() {
    let m = model();
    let denver = m.embed_one("moved to Denver").unwrap();
    let colorado = m.embed_one("relocated to Colorado").unwrap();
    let sushi = m.embed_one("I love eating sushi with friends").unwrap();
    let (near, far) = (cosine(&denver, &colorado), cosine(&denver, &sushi));
    assert!(
        near > far + 0.25,
        "cos(Denver, Colorado) {near}, cos(Denver, sushi) {far}"
    );
}

#[test]
fn a_batch_equals_one_by_one() {
    let m = model();
    let long = long_text();
    // More than one internal batch, with lengths that differ widely.
    let mut texts: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "Caller {i} asked to be called back {} times.",
                "many ".repeat(i % 7)
            )
        })
        .collect();
    texts.push(String::new());
    texts.push(long);
    texts.push("Short.".into());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = m.embed(&refs).unwrap();
    assert_eq!(batch.len(), refs.len());
    for (text, got) in refs.iter().zip(&batch) {
        let alone = m.embed_one(text).unwrap();
        let worst = got
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "{text:.40?}: differs by {worst}");
    }
}

#[test]
fn empty_and_very_long_texts_embed() {
    let m = model();
    assert!(m.embed(&[]).unwrap().is_empty());
    for text in ["", &long_text()] {
        let v = m.embed_one(text).unwrap();
        assert_eq!(v.len(), DIM);
        assert!((norm(&v) - 1.0).abs() < 1e-4);
    }
    // The long text is truncated to its first 256 tokens (NumPy reference).
    let v = m.embed_one(&long_text()).unwrap();
    let reference = [-0.0475846, -0.1077719, -0.0141114, -0.0428787, 0.0113699];
    for (i, (got, want)) in v.iter().zip(reference).enumerate() {
        assert!((got - want).abs() < 1e-4, "dim {i}: {got} vs {want}");
    }
}

#[test]
fn a_missing_model_names_the_file_and_the_fix() {
    let dir = std::env::temp_dir().join("sofia-memory-embed-no-such-dir");
    let err = format!("{:#}", MiniLm::load(&dir).unwrap_err());
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains("sofia-phone models fetch"), "{err}");
}
