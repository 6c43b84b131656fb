//! Texts and token ids → a model's inputs, on an inference thread: tokenization that reads a
//! long text only as far as the model can take it, and the checks of pre-tokenized input.

use stowage_engine::{Inputs, Row};
use tokenizers::Tokenizer;

use crate::serve::request::{PredictError, Request};

/// What turns a model's texts into its inputs: its tokenizer, set up for the model.
#[derive(Clone)]
pub struct TextEncoder {
    pub tokenizer: Tokenizer,
    /// Longest token sequence accepted (tokenizer truncation, capped by the model's positions).
    pub max_length: usize,
    pub vocab_size: usize,
    pub pad_id: i64,
}

/// A tokenizer that does not fit its model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenizerError {
    #[error("{0}")]
    Truncation(String),
    #[error("the tokenizer has {vocab_size} tokens but the model's word embeddings have {rows} rows")]
    Vocabulary { vocab_size: usize, rows: usize },
}

/// Texts that could not be made into inputs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EncodeError {
    #[error("give one text pair per text")]
    Pairs,
    #[error("tokenization failed: {0}")]
    Tokenizer(String),
}

impl TextEncoder {
    /// Sets `tokenizer` up for a model with `positions` position rows (from its config or its
    /// file) and `vocab_rows` rows of word embeddings: no fixed padding, truncation at what the
    /// model can take, and every token id inside its table.
    pub fn new(
        mut tokenizer: Tokenizer,
        positions: Option<usize>,
        vocab_rows: Option<usize>,
    ) -> Result<Self, TokenizerError> {
        // Many exported tokenizer.json files pad every input to 128: pad only within a batch, here.
        tokenizer.with_padding(None);
        let max_length = tokenizer.get_truncation().map_or(512, |t| t.max_length).min(positions.unwrap_or(512)).max(2);
        // Truncate at what the model can take, also when the tokenizer.json itself does not.
        let truncation = tokenizer.get_truncation().cloned().unwrap_or_default();
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length, ..truncation }))
            .map_err(|e| TokenizerError::Truncation(e.to_string()))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0) as i64;
        let vocab_size = tokenizer.get_vocab_size(true);
        if let Some(rows) = vocab_rows.filter(|&rows| vocab_size > rows) {
            // Texts with the tokenizer's last ids would fail in the engine, request after request.
            return Err(TokenizerError::Vocabulary { vocab_size, rows });
        }
        Ok(Self { tokenizer, max_length, vocab_size, pad_id })
    }

    /// Tokenizes texts (and optional pairs) into one batch padded to its longest row.
    pub fn encode(&self, texts: &[String], pairs: Option<&[String]>) -> Result<Inputs, EncodeError> {
        self.encode_checked(texts, pairs).map(|(x, _)| x)
    }

    /// Like `encode`, and says whether any input was cut at `max_length`.
    pub fn encode_checked(&self, texts: &[String], pairs: Option<&[String]>) -> Result<(Inputs, bool), EncodeError> {
        // One text at a time on the calling (inference) thread, without `encode_batch`'s
        // parallel iterator; offsets are not used, so `encode_fast` does not compute them.
        if pairs.is_some_and(|p| p.len() != texts.len()) {
            return Err(EncodeError::Pairs);
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
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
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

/// Text or checked token ids → the model's inputs.
pub fn inputs(text: &TextEncoder, request: Request) -> Result<Inputs, PredictError> {
    match request {
        Request::Texts { texts, pairs, truncate } => {
            let (x, cut) =
                text.encode_checked(&texts, pairs.as_deref()).map_err(|e| PredictError::Invalid(e.to_string()))?;
            if cut && !truncate {
                return Err(PredictError::Invalid(format!(
                    "an input is longer than {} tokens and \"truncate\" is false",
                    text.max_length
                )));
            }
            Ok(x)
        }
        Request::Tokens { input_ids, attention_mask, token_type_ids } => {
            tokens_to_inputs(text, input_ids, attention_mask, token_type_ids)
        }
    }
}

/// Checks pre-tokenized input against the model: shapes, vocabulary, mask values, length.
fn tokens_to_inputs(
    text: &TextEncoder,
    ids: Vec<Vec<i64>>,
    mask: Vec<Vec<i64>>,
    types: Option<Vec<Vec<i64>>>,
) -> Result<Inputs, PredictError> {
    let invalid = |m: &str| PredictError::Invalid(m.to_string());
    if ids.is_empty() || ids.iter().any(|r| r.is_empty()) {
        return Err(invalid("\"input_ids\" must hold at least one non-empty row"));
    }
    let seq = ids[0].len();
    let rect = |rows: &Vec<Vec<i64>>| rows.len() == ids.len() && rows.iter().all(|r| r.len() == seq);
    if !rect(&ids) || !rect(&mask) || types.as_ref().is_some_and(|t| !rect(t)) {
        return Err(invalid(
            "\"input_ids\", \"attention_mask\" and \"token_type_ids\" must be rectangular and of one shape",
        ));
    }
    if seq > text.max_length {
        return Err(PredictError::Invalid(format!("{seq} tokens, the model takes at most {}", text.max_length)));
    }
    let vocab = text.vocab_size as i64;
    if let Some(bad) = ids.iter().flatten().find(|&&t| t < 0 || t >= vocab) {
        return Err(PredictError::Invalid(format!("token id {bad} is outside the vocabulary (0..{vocab})")));
    }
    if mask.iter().flatten().any(|&v| v != 0 && v != 1) {
        return Err(invalid("\"attention_mask\" values must be 0 or 1"));
    }
    if types.iter().flatten().flatten().any(|&v| v != 0 && v != 1) {
        return Err(invalid("\"token_type_ids\" values must be 0 or 1"));
    }
    let batch = ids.len();
    Ok(Inputs {
        batch,
        seq,
        input_ids: ids.into_iter().flatten().collect(),
        attention_mask: mask.into_iter().flatten().collect(),
        token_type_ids: types.map_or_else(|| vec![0; batch * seq], |t| t.into_iter().flatten().collect()),
    })
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
        stowage_synth::tokenizer::build(&stowage_synth::tokenizer::vocabulary(1000), 512).unwrap()
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
