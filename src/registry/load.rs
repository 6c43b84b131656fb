//! Loading one model: read the artifact, check it, read its signature, load it in its engine, load
//! the tokenizer and labels, warm up. Every failure is a sentence naming the model and the file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use stowage_core::{Catalog, Engine as EngineKind};
use tokenizers::Tokenizer;

use crate::backend::{self, EngineOptions, Inputs, Model, Row, Signature};
use crate::storage::{Fetcher, Source};

/// What the node needs to know to load one model.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub id: String,
    pub engine: EngineKind,
    pub artifact: Source,
    pub tokenizer: Source,
    pub config: Option<Source>,
    /// The config was not named in the catalog: the one beside the artifact is used if it exists.
    pub config_optional: bool,
    pub sha256: Option<String>,
}

impl ModelSpec {
    /// The spec of catalog model `id`; tokenizer and config default to files beside the artifact.
    pub fn from_catalog(catalog: &Catalog, id: &str, default_engine: EngineKind) -> Result<Self, String> {
        let m =
            catalog.model(id).ok_or_else(|| format!("model {id:?} is not in catalog {}", catalog.path.display()))?;
        let base = catalog.base_dir();
        let artifact = Source::parse(base, &m.artifact)?;
        let tokenizer = match &m.tokenizer {
            Some(t) => Source::parse(base, t)?,
            None => artifact.beside("tokenizer.json"),
        };
        let (config, config_optional) = match &m.config {
            Some(c) => (Some(Source::parse(base, c)?), false),
            None => (Some(artifact.beside("config.json")), true),
        };
        Ok(Self {
            id: id.to_string(),
            engine: m.engine.unwrap_or(default_engine),
            artifact,
            tokenizer,
            config,
            config_optional,
            sha256: m.sha256.clone(),
        })
    }
}

/// A model's files on local disk.
#[derive(Debug, Clone)]
pub struct Files {
    pub artifact: PathBuf,
    pub tokenizer: PathBuf,
    pub config: Option<PathBuf>,
    /// The catalog's sha256 of the artifact was already checked (when it was downloaded).
    pub sha256_checked: bool,
    /// Bytes downloaded now, and bytes of cached copies reused.
    pub downloaded: u64,
    pub reused: u64,
}

/// Brings a model's files to local disk (a no-op for local files).
pub async fn fetch(spec: &ModelSpec, fetcher: &Fetcher) -> Result<Files, String> {
    let artifact = fetcher.fetch(&spec.artifact, spec.sha256.as_deref()).await?;
    let tokenizer = fetcher.fetch(&spec.tokenizer, None).await?;
    let config = match &spec.config {
        Some(c) if spec.config_optional => fetcher.fetch_optional(c).await?,
        Some(c) => Some(fetcher.fetch(c, None).await?),
        None => None,
    };
    let all = [Some(&artifact), Some(&tokenizer), config.as_ref()];
    Ok(Files {
        downloaded: all.iter().flatten().map(|f| f.downloaded).sum(),
        reused: all.iter().flatten().map(|f| f.reused).sum(),
        artifact: artifact.path,
        tokenizer: tokenizer.path,
        sha256_checked: artifact.sha256_checked,
        config: config.map(|c| c.path),
    })
}

/// A model ready to answer.
pub struct LoadedModel {
    pub model: Box<dyn Model>,
    pub signature: Signature,
    pub tokenizer: Tokenizer,
    pub labels: Vec<String>,
    /// Longest token sequence accepted (tokenizer truncation, capped by the model's positions).
    pub max_length: usize,
    pub vocab_size: usize,
    pub pad_id: i64,
}

/// Facts measured while loading.
pub struct Loaded {
    pub model: LoadedModel,
    pub weights_bytes: u64,
    pub load_seconds: f64,
    pub warmup_seconds: f64,
}

fn read_config(path: Option<&Path>) -> Result<(Vec<String>, Option<usize>), String> {
    let Some(path) = path else { return Ok((Vec::new(), None)) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let mut labels = Vec::new();
    if let Some(map) = v.get("id2label").and_then(|m| m.as_object()) {
        let mut pairs: Vec<(usize, String)> = Vec::new();
        for (k, name) in map {
            let i =
                k.parse::<usize>().map_err(|_| format!("{}: id2label key {k:?} is not a number", path.display()))?;
            pairs.push((i, name.as_str().unwrap_or_default().to_string()));
        }
        pairs.sort();
        labels = pairs.into_iter().map(|p| p.1).collect();
    }
    let positions = v.get("max_position_embeddings").and_then(|x| x.as_u64()).map(|x| x as usize);
    Ok((labels, positions))
}

/// Loads and warms up a model whose files are all local. Runs on a blocking thread.
pub fn load(spec: &ModelSpec, opts: &EngineOptions) -> Result<Loaded, String> {
    let local = |s: &Source| match s {
        Source::Local(p) => Ok(p.clone()),
        Source::S3(u) => Err(format!("{u}: fetch S3 files first (registry::load::fetch)")),
    };
    let config = match &spec.config {
        Some(c) => Some(local(c)?).filter(|p| !spec.config_optional || p.is_file()),
        None => None,
    };
    let files = Files {
        artifact: local(&spec.artifact)?,
        tokenizer: local(&spec.tokenizer)?,
        config,
        sha256_checked: false,
        downloaded: 0,
        reused: 0,
    };
    load_files(spec, &files, opts)
}

/// Loads and warms up one model from its local files. Runs on a blocking thread.
pub fn load_files(spec: &ModelSpec, files: &Files, opts: &EngineOptions) -> Result<Loaded, String> {
    let start = Instant::now();
    let path = files.artifact.display();
    let bytes = std::fs::read(&files.artifact).map_err(|e| format!("cannot read {path}: {e}"))?;
    if let Some(want) = spec.sha256.as_ref().filter(|_| !files.sha256_checked) {
        let got = hex::encode(Sha256::digest(&bytes));
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!("{path}: sha256 is {got}, the catalog says {want}"));
        }
    }
    let signature = backend::signature(&bytes).map_err(|e| format!("{}: {e}", spec.artifact))?;
    let model = backend::load(spec.engine, &bytes, &signature, opts).map_err(|e| format!("{}: {e}", spec.artifact))?;
    let mut tokenizer =
        Tokenizer::from_file(&files.tokenizer).map_err(|e| format!("cannot load tokenizer {}: {e}", spec.tokenizer))?;
    let (mut labels, positions) = read_config(files.config.as_deref())?;
    // Many exported tokenizer.json files pad every input to 128: pad only within a batch, here.
    tokenizer.with_padding(None);
    let positions = positions.into_iter().chain(signature.position_rows).min();
    let max_length = tokenizer.get_truncation().map_or(512, |t| t.max_length).min(positions.unwrap_or(512)).max(2);
    // Truncate at what the model can take, also when the tokenizer.json itself does not.
    let truncation = tokenizer.get_truncation().cloned().unwrap_or_default();
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams { max_length, ..truncation }))
        .map_err(|e| format!("{}: {e}", spec.tokenizer))?;
    let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0) as i64;
    let vocab_size = tokenizer.get_vocab_size(true);
    if let Some(rows) = signature.vocab_rows.filter(|&rows| vocab_size > rows) {
        // Texts with the tokenizer's last ids would fail in the engine, request after request.
        return Err(format!(
            "{}: the tokenizer has {vocab_size} tokens but {}'s word embeddings have {rows} rows \
             (the tokenizer of another model?)",
            spec.tokenizer, spec.artifact
        ));
    }
    if let (backend::OutputKind::Logits, Some(n)) = (signature.kind, signature.output_width) {
        if labels.len() != n {
            labels = (0..n).map(|i| format!("LABEL_{i}")).collect();
        }
    }
    let loaded = LoadedModel { model, signature, tokenizer, labels, max_length, vocab_size, pad_id };
    let load_seconds = start.elapsed().as_secs_f64();

    let warm = Instant::now();
    let inputs = loaded.encode(&["warm up".to_string()], None).map_err(|e| format!("warm-up: {e}"))?;
    loaded.model.predict(&inputs).map_err(|e| format!("warm-up failed: {e}"))?;
    Ok(Loaded {
        model: loaded,
        weights_bytes: bytes.len() as u64,
        load_seconds,
        warmup_seconds: warm.elapsed().as_secs_f64(),
    })
}

impl LoadedModel {
    /// Tokenizes texts (and optional pairs) into one batch padded to its longest row.
    pub fn encode(&self, texts: &[String], pairs: Option<&[String]>) -> Result<Inputs, String> {
        self.encode_checked(texts, pairs).map(|(x, _)| x)
    }

    /// Like `encode`, and says whether any input was cut at `max_length`.
    pub fn encode_checked(&self, texts: &[String], pairs: Option<&[String]>) -> Result<(Inputs, bool), String> {
        // One text at a time on the calling (inference) thread, without `encode_batch`'s
        // parallel iterator; offsets are not used, so `encode_fast` does not compute them.
        if pairs.is_some_and(|p| p.len() != texts.len()) {
            return Err("give one text pair per text".into());
        }
        let one = |i: usize, text: &String| match pairs {
            None => encode_start(&self.tokenizer, self.max_length, text),
            Some(p) => encode_pair_start(&self.tokenizer, self.max_length, text, &p[i]),
        };
        let encodings = texts
            .iter()
            .enumerate()
            .map(|(i, t)| one(i, t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tokenization failed: {e}"))?;
        let rows: Vec<(Vec<i64>, Vec<i64>, Vec<i64>)> = encodings
            .iter()
            .map(|e| {
                (
                    e.get_ids().iter().map(|&x| x as i64).collect(),
                    e.get_attention_mask().iter().map(|&x| x as i64).collect(),
                    e.get_type_ids().iter().map(|&x| x as i64).collect(),
                )
            })
            .collect();
        let truncated = encodings.iter().any(|e| !e.get_overflowing().is_empty());
        Ok((self.pad(rows), truncated))
    }

    /// Pads rows of (ids, mask, types) to the longest.
    pub fn pad(&self, rows: Vec<(Vec<i64>, Vec<i64>, Vec<i64>)>) -> Inputs {
        let rows: Vec<Row<'_>> = rows.iter().map(|(i, m, t)| (&i[..], &m[..], &t[..])).collect();
        Inputs::from_rows(&rows, self.pad_id)
    }
}

/// One text, reading only as much of a long text as its first `max_length` tokens need, so
/// that a megabyte of text costs what the model can take of it (the whole text took 300 ms to
/// tokenize for a model that runs in 1 ms): the start of `grow_start` that the tokenizer
/// truncates. Its tokens are the whole text's, and its being truncated means the whole text is
/// too. Tokenizers that keep the last tokens (truncating on the left) read the whole text.
fn encode_start(tokenizer: &Tokenizer, max_length: usize, text: &str) -> tokenizers::Result<tokenizers::Encoding> {
    let cut = tokenizer.get_truncation().is_some_and(|t| t.direction == tokenizers::TruncationDirection::Right);
    grow_start(text, max_length, cut, |head, whole| {
        let encoding = tokenizer.encode_fast(head, true)?;
        Ok((whole || !encoding.get_overflowing().is_empty()).then_some(encoding))
    })
}

/// A text pair, reading only as much of each long text as the pair's tokens need. With
/// `LongestFirst` truncation (the default), `tokenizers` turns each text into at most
/// `max_length` tokens (it stops its model there) and shares the budget out by those lengths; so
/// a start of a text (`grow_start`) that already makes `max_length` tokens gives the same pair as
/// the whole text. The other strategies read both texts whole.
fn encode_pair_start(
    tokenizer: &Tokenizer,
    max_length: usize,
    a: &str,
    b: &str,
) -> tokenizers::Result<tokenizers::Encoding> {
    let cut = tokenizer.get_truncation().is_some_and(|t| {
        t.direction == tokenizers::TruncationDirection::Right
            && t.strategy == tokenizers::TruncationStrategy::LongestFirst
    });
    // Short texts are taken whole without a look; a start is checked alone, without special
    // tokens (it has at most `max_length` tokens: the cap).
    let start = |text| {
        grow_start(text, max_length, cut, |head, whole| {
            Ok((whole || tokenizer.encode_fast(head, false)?.len() >= max_length).then_some(head))
        })
    };
    tokenizer.encode_fast((start(a)?, start(b)?), true)
}

/// The first start of `text` that `enough` takes (it is told when the start is the whole text,
/// and must take that): the text cut before a space past `CHARS_PER_TOKEN` characters per token
/// of `max_length` (texts average 4–6), the cut grown ×4 each time; the whole text at once when
/// `cut` is false or no space is in reach. A start that ends before a space has the whole text's
/// first tokens: no tokenizer makes a token across a space (WordPiece, Metaspace and byte-level
/// pre-tokenizers all split there).
fn grow_start<'t, T>(
    text: &'t str,
    max_length: usize,
    cut: bool,
    mut enough: impl FnMut(&'t str, bool) -> tokenizers::Result<Option<T>>,
) -> tokenizers::Result<T> {
    let mut reach = max_length.saturating_mul(CHARS_PER_TOKEN);
    loop {
        let head = if cut { before_a_space(text, reach) } else { text };
        if let Some(taken) = enough(head, head.len() == text.len())? {
            return Ok(taken);
        }
        reach = reach.saturating_mul(4);
    }
}

/// Characters of a text read per token the model takes, before the rest is looked at.
const CHARS_PER_TOKEN: usize = 16;

/// The longest start of `text` within `bytes` bytes that ends just before a space; the whole text
/// when it is no longer, or when no space is in reach.
fn before_a_space(text: &str, bytes: usize) -> &str {
    if text.len() <= bytes {
        return text;
    }
    // Spaces are one byte: any byte position of one is a char boundary.
    match text.as_bytes()[..bytes].iter().rposition(|&b| b == b' ') {
        Some(i) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::bpe::BPE;
    use tokenizers::models::unigram::Unigram;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
    use tokenizers::TruncationParams;

    /// Texts whose long forms test the cut: runs of spaces, tabs and newlines, punctuation,
    /// accents, CJK and emoji, long words, and a space just past every possible cut.
    fn texts() -> Vec<String> {
        let parts = [
            "the delivery was fast",
            "  and   the support\tteam was\nvery helpful!",
            "café naïve résumé",
            "東京 の 天気",
            "ok 👍 great",
            "supercalifragilisticexpialidociousandthensome",
            "a,b;c. d",
        ];
        let mut texts: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
        for n in [1, 7, 40, 200, 600] {
            for (i, p) in parts.iter().enumerate() {
                texts.push(
                    (0..n).map(|k| parts[(i + k) % parts.len()]).collect::<Vec<_>>().join(if n % 2 == 0 {
                        " "
                    } else {
                        "  "
                    }) + p,
                );
            }
        }
        // A word that a cut anywhere but at a space would split into other pieces, where the few
        // tokens before it leave those pieces among the kept ones (max_length 8: cut at 128 bytes).
        for spaces in 100..140 {
            texts.push(format!("ok{}{}", " ".repeat(spaces), "deliveryfast".repeat(3)));
        }
        texts.push("x".repeat(20_000));
        texts.push(format!(" {}", "word ".repeat(5_000)));
        texts
    }

    fn truncating(mut t: Tokenizer, max_length: usize) -> Tokenizer {
        t.with_truncation(Some(TruncationParams { max_length, ..TruncationParams::default() })).unwrap();
        t
    }

    fn wordpiece() -> Tokenizer {
        crate::synth::tokenizer::build(&crate::synth::tokenizer::vocabulary(1000), 512).unwrap()
    }

    fn byte_level() -> Tokenizer {
        let alphabet: Vec<String> = ByteLevel::alphabet().into_iter().map(String::from).collect();
        let mut vocab: tokenizers::models::bpe::Vocab =
            alphabet.iter().enumerate().map(|(i, c)| (c.clone(), i as u32)).collect();
        let merges = vec![("Ġ".to_string(), "t".to_string()), ("h".to_string(), "e".to_string())];
        for (a, b) in &merges {
            let n = vocab.len() as u32;
            vocab.insert(format!("{a}{b}"), n);
        }
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().unwrap();
        let mut t = Tokenizer::new(bpe);
        t.with_pre_tokenizer(Some(ByteLevel::default()));
        t
    }

    fn metaspace() -> Tokenizer {
        let mut vocab = vec![("<unk>".to_string(), 0.0), ("▁".to_string(), -1.0)];
        for c in "abcdefghijklmnopqrstuvwxyz".chars() {
            vocab.push((c.to_string(), -2.0));
            vocab.push((format!("▁{c}"), -1.5));
        }
        vocab.push(("▁the".to_string(), -1.0));
        let mut t = Tokenizer::new(Unigram::from(vocab, Some(0), false).unwrap());
        t.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
        t
    }

    #[test]
    fn a_long_text_is_read_only_as_far_as_its_tokens_need_with_the_whole_texts_result() {
        for (name, tokenizer) in [("wordpiece", wordpiece()), ("byte-level", byte_level()), ("metaspace", metaspace())]
        {
            for max_length in [8, 128] {
                let t = truncating(tokenizer.clone(), max_length);
                for text in texts() {
                    let whole = t.encode_fast(text.as_str(), true).unwrap();
                    let start = encode_start(&t, max_length, &text).unwrap();
                    let what = format!("{name}, max_length {max_length}, text of {} bytes", text.len());
                    assert_eq!(start.get_ids(), whole.get_ids(), "{what}");
                    assert_eq!(start.get_type_ids(), whole.get_type_ids(), "{what}");
                    assert_eq!(start.get_overflowing().is_empty(), whole.get_overflowing().is_empty(), "{what}");
                }
            }
        }
    }

    #[test]
    fn a_long_text_in_a_pair_is_read_only_as_far_as_the_pairs_tokens_need() {
        let mut texts = texts();
        // Both long, the start of the first shorter than the second, the whole first longer.
        texts.push("a ".repeat(280));
        texts.push("b ".repeat(80));
        let n = texts.len();
        let picks = [0, 3, 20, n - 43, n - 5, n - 3, n - 2, n - 1];
        for (name, tokenizer) in [("wordpiece", wordpiece()), ("byte-level", byte_level()), ("metaspace", metaspace())]
        {
            for max_length in [10, 128] {
                let t = truncating(tokenizer.clone(), max_length);
                for &i in &picks {
                    for &j in &picks {
                        let (a, b) = (texts[i].as_str(), texts[j].as_str());
                        if a.len().max(b.len()) > 1000 && a.len().min(b.len()) > 60 {
                            continue; // two long texts: slow to tokenize whole for the reference
                        }
                        let whole = t.encode_fast((a, b), true).unwrap();
                        let start = encode_pair_start(&t, max_length, a, b).unwrap();
                        let what =
                            format!("{name}, max_length {max_length}, texts of {} and {} bytes", a.len(), b.len());
                        assert_eq!(start.get_ids(), whole.get_ids(), "{what}");
                        assert_eq!(start.get_type_ids(), whole.get_type_ids(), "{what}");
                        assert_eq!(start.get_overflowing().is_empty(), whole.get_overflowing().is_empty(), "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_cut_ends_before_a_space_within_reach() {
        assert_eq!(before_a_space("ab cd ef", 100), "ab cd ef");
        assert_eq!(before_a_space("ab cd ef", 6), "ab cd");
        assert_eq!(before_a_space("ab cd ef", 5), "ab");
        assert_eq!(before_a_space("abcdef gh", 4), "abcdef gh", "no space in reach: the whole text");
        assert_eq!(before_a_space("é é é", 4), "é", "a cut never splits a character");
    }
}
