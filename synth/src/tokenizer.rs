//! A WordPiece `tokenizer.json` (BERT-uncased conventions: [PAD]=0, [UNK]=100, [CLS]=101,
//! [SEP]=102, [MASK]=103), built and saved with the `tokenizers` crate.

use std::path::Path;

use anyhow::{anyhow, Result};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Tokenizer, TokenizerBuilder, TruncationParams};

/// Common English words, so that demo text tokenizes into whole words.
const WORDS: &str = "the of and to in is was for on that with as by it at from his an were are which this be or \
has had first one their its new after but who not they have her she two been other when there all during into \
school time may years more most only over city some world would where later up such used many can state about \
national out known university united then made these than also between through what good great best love like \
hate bad terrible awesome excellent poor product service order delivery price quality fast slow shop store \
customer support help thanks please return refund broken works work working happy sad angry amazing nice \
ok okay very really not no yes i you we me my your our he him them do does did done will would could should \
buy bought sell sold item items shipping arrived late early day days week weeks month money card payment \
account login password app website page search find found recommend recommended again never always";

/// The vocabulary: specials and unused slots, characters, continuation characters, words, filler.
pub fn vocabulary(size: usize) -> Vec<String> {
    let mut v: Vec<String> = vec!["[PAD]".into()];
    v.extend((1..100).map(|i| format!("[unused{i}]")));
    v.extend(["[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from));
    let chars: Vec<char> = ('a'..='z').chain('0'..='9').chain("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".chars()).collect();
    v.extend(chars.iter().map(|c| c.to_string()));
    v.extend(chars.iter().filter(|c| c.is_ascii_alphanumeric()).map(|c| format!("##{c}")));
    let mut seen: std::collections::HashSet<String> = v.iter().cloned().collect();
    for w in WORDS.split_whitespace() {
        if seen.insert(w.to_string()) {
            v.push(w.to_string());
        }
    }
    let mut n = 0;
    while v.len() < size {
        v.push(format!("##x{n}"));
        n += 1;
    }
    v.truncate(size.max(v.len().min(size)));
    v
}

/// Builds the tokenizer for `vocab`, truncating at `max_length` (no padding: the server pads
/// within a batch only).
pub fn build(vocab: &[String], max_length: usize) -> Result<Tokenizer> {
    let map: ahash::AHashMap<String, u32> = vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let model = WordPiece::builder()
        .vocab(map)
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| anyhow!("wordpiece: {e}"))?;
    let tok = TokenizerBuilder::new()
        .with_model(model)
        .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(("[SEP]".into(), 102), ("[CLS]".into(), 101))))
        .with_decoder(Some(WordPieceDecoder::default()))
        .with_truncation(Some(TruncationParams { max_length, ..Default::default() }))
        .with_padding(None)
        .build()
        .map_err(|e| anyhow!("tokenizer: {e}"))?;
    Ok(Tokenizer::from(tok))
}

pub fn save(tok: &Tokenizer, path: &Path) -> Result<()> {
    tok.save(path, true).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}
