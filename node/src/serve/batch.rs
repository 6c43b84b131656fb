//! Dynamic batching, per model: requests that wait for the same model while its engine is busy
//! run together in one engine call, padded to the longest. Nothing waits for a batch to fill:
//! an idle model runs a request at once, alone; only requests that arrive while the model's
//! engine calls are all busy are combined, up to `rows` inputs. On memory-bound CPU inference
//! (bert-base streams its weights once per call) this multiplies throughput under load
//! (BENCHMARKS.md); at low load it changes nothing.
//!
//! Each model has a queue of pending requests and a count of engine calls running (at most
//! `calls`; one for an ONNX Runtime session). A call takes what is pending, runs it on the node's
//! inference threads, and, if more arrived meanwhile, queues its next call behind the other
//! models' work, so a busy model never holds a thread while others wait.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use stowage_engine::{EngineError, Inputs, Output};
use tokio::sync::oneshot;

use crate::lifecycle::load::LoadedModel;
use crate::metrics::ModelMetrics;
use crate::serve::pool::{Lost, Pool};
use crate::serve::request::{Answer, PredictError, Queued, Request};
use crate::serve::{postprocess, tokenize};

type Reply = oneshot::Sender<Result<Answer, PredictError>>;

pub struct Batcher {
    /// The model's id, for what its requests are told.
    model: String,
    batch_wait: metrics::Histogram,
    tokenization: metrics::Histogram,
    batches: metrics::Counter,
    batched_inputs: metrics::Counter,
    queue: Mutex<Queue>,
    /// Engine calls that may run at once.
    calls: AtomicUsize,
    /// Most inputs in one engine call (a single larger request still runs, alone).
    rows: usize,
    /// Most padded tokens (rows × the longest) in one engine call (a single larger request still
    /// runs, alone).
    max_tokens: usize,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Queued>,
    running: usize,
}

impl Batcher {
    pub fn new(model: &str, metrics: &ModelMetrics, calls: usize, rows: usize, max_tokens: usize) -> Self {
        Self {
            model: model.to_string(),
            batch_wait: metrics.batch_wait.clone(),
            tokenization: metrics.tokenization.clone(),
            batches: metrics.batches.clone(),
            batched_inputs: metrics.batched_inputs.clone(),
            queue: Mutex::new(Queue::default()),
            calls: AtomicUsize::new(calls.max(1)),
            rows: rows.max(1),
            max_tokens: max_tokens.max(1),
        }
    }

    /// Lowers the engine calls that may run at once to what the loaded engine allows.
    pub fn cap(&self, n: usize) {
        self.calls.fetch_min(n.max(1), Ordering::SeqCst);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Requests waiting for one of the model's engine calls.
    pub fn pending(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.pending.len())
    }

    /// Queues `request`; starts an engine call when fewer than `calls` run.
    pub fn submit(self: &Arc<Self>, pool: &Arc<Pool>, engine: &Arc<LoadedModel>, request: Queued) -> Result<(), Lost> {
        let start = {
            let mut q = self.queue.lock().map_err(|_| Lost)?;
            q.pending.push_back(request);
            let start = q.running < self.calls();
            if start {
                q.running += 1;
            }
            start
        };
        if start {
            if let Err(lost) = self.clone().schedule(pool.clone(), engine.clone()) {
                self.abandon();
                return Err(lost);
            }
        }
        Ok(())
    }

    /// The pool is gone (the node is stopping): drops what waits, which answers its callers
    /// (their answer channels close), and gives back the call that could not be queued.
    fn abandon(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.pending.clear();
            q.running -= 1;
        }
    }

    fn schedule(self: Arc<Self>, pool: Arc<Pool>, engine: Arc<LoadedModel>) -> Result<(), Lost> {
        let p = pool.clone();
        p.submit(move || self.call(pool, engine))
    }

    /// One engine call on an inference thread: takes what is pending (up to `rows` inputs), runs
    /// it, answers each request, then either queues the next call or ends.
    fn call(self: Arc<Self>, pool: Arc<Pool>, engine: Arc<LoadedModel>) {
        let batch = match self.queue.lock() {
            Ok(mut q) => take(&mut q.pending, self.rows),
            Err(_) => return,
        };
        let (started, requests) = (Instant::now(), batch.len());
        // A panicking engine or tokenizer fails this batch (its answer channels drop), never the
        // model: the bookkeeping below runs whatever happens.
        let _ = catch_unwind(AssertUnwindSafe(|| self.run(&engine, batch)));
        pool.account(started.elapsed().as_secs_f64(), requests);
        let again = match self.queue.lock() {
            Ok(mut q) if q.pending.is_empty() => {
                q.running -= 1;
                false
            }
            Ok(_) => true,
            Err(_) => false,
        };
        if again && self.clone().schedule(pool, engine).is_err() {
            self.abandon();
        }
    }

    fn run(&self, engine: &LoadedModel, taken: Vec<Queued>) {
        let ready: Vec<Queued> = taken.into_iter().filter_map(|q| self.prepare(engine, q)).collect();
        let (batch, rest) = by_tokens(ready, self.max_tokens);
        if !rest.is_empty() {
            // Left for the next call, first in line and tokenized; `call` schedules it.
            if let Ok(mut q) = self.queue.lock() {
                for r in rest.into_iter().rev() {
                    q.pending.push_front(r);
                }
            }
        }
        let mut parts: Vec<(Inputs, Reply, tracing::Span)> =
            batch.into_iter().filter_map(|q| q.inputs.map(|x| (x, q.reply, q.span))).collect();
        if parts.is_empty() {
            return;
        }
        self.batches.increment(1);
        let inputs = parts.iter().map(|p| p.0.batch).sum::<usize>();
        self.batched_inputs.increment(inputs as u64);
        // Each request's share of the engine call, as a child of its own span: one call serves
        // every request of the batch.
        let backend = engine.model.backend();
        let steps: Vec<tracing::Span> = parts
            .iter()
            .map(|p| crate::step!(&p.2, "inference", engine = %backend, requests = parts.len(), inputs))
            .collect();
        if parts.len() == 1 {
            // Alone: no copy into a batch and out again.
            if let Some((x, reply, _)) = parts.pop() {
                let t = Instant::now();
                let out = engine.model.predict(&x);
                let secs = t.elapsed().as_secs_f64();
                drop(steps);
                answer(engine, &x, out, secs, reply);
            }
            return;
        }
        let x = concat(parts.iter().map(|p| &p.0), engine.text.pad_id);
        let t = Instant::now();
        let out = engine.model.predict(&x);
        let secs = t.elapsed().as_secs_f64();
        drop(steps);
        let mut row = 0;
        for (own, reply, _) in parts {
            let rows = own.batch;
            let out = out.as_ref().map_err(Clone::clone).map(|o| slice_output(o, row, rows));
            answer(engine, &slice_inputs(&x, row, rows), out, secs, reply);
            row += rows;
        }
    }

    /// A queued request, tokenized (on the inference thread: tokenization is CPU work too); or
    /// `None` when it was answered at once or dropped — its client hung up, it waited past its
    /// limit, its input does not fit the model — which then costs the batch nothing.
    fn prepare(&self, engine: &LoadedModel, mut q: Queued) -> Option<Queued> {
        if q.abandoned() {
            // Nobody reads the answer: the engine does not run for it. A client that only closed
            // its writing side still hears why (499).
            crate::metrics::rejected(&self.model, "client_gone");
            let _ = q.reply.send(Err(PredictError::ClientGone(self.model.clone())));
            return None;
        }
        if q.inputs.is_some() {
            return Some(q);
        }
        self.batch_wait.record(q.admitted.elapsed().as_secs_f64());
        q.queue = tracing::Span::none();
        if let Some(limit) = q.expired() {
            // Its client may be long gone: answer, and run nothing.
            let _ = q.reply.send(Err(PredictError::timed_out(&self.model, limit)));
            return None;
        }
        let t = Instant::now();
        let x = crate::step!(&q.span, "tokenize")
            .in_scope(|| tokenize::inputs(&engine.text, std::mem::replace(&mut q.request, Request::taken())));
        self.tokenization.record(t.elapsed().as_secs_f64());
        match x {
            Ok(x) => {
                q.inputs = Some(x);
                Some(q)
            }
            Err(e) => {
                let _ = q.reply.send(Err(e));
                None
            }
        }
    }
}

/// What one more engine call costs beyond its tokens, in tokens: about 32 on CPU.
const CALL_TOKENS: usize = 32;

/// The next batch of tokenized requests and what waits for the one after. The oldest goes first
/// whatever its size; the others join, closest in length first, while the batch stays within
/// `max_tokens` padded tokens and a request adds no more padded tokens than it would cost alone
/// (its own tokens and a call's overhead, `CALL_TOKENS`): texts of similar length batch together,
/// and one long text does not pad short ones. What does not join keeps its order.
fn by_tokens(ready: Vec<Queued>, max_tokens: usize) -> (Vec<Queued>, Vec<Queued>) {
    let mut ready: Vec<Option<Queued>> = ready.into_iter().map(Some).collect();
    let shape = |q: &Option<Queued>| q.as_ref().and_then(|q| q.inputs.as_ref()).map_or((0, 0), |x| (x.batch, x.seq));
    let shapes: Vec<(usize, usize)> = ready.iter().map(shape).collect();
    let Some(&(_, first)) = shapes.first() else { return (Vec::new(), Vec::new()) };
    let padded = |rows: usize, longest: usize| rows * longest;
    let mut order: Vec<usize> = (1..ready.len()).collect();
    order.sort_by_key(|&i| (shapes[i].1.abs_diff(first), i));
    let mut chosen = vec![0];
    let (mut rows, mut longest) = shapes[0];
    for i in order {
        let (r, seq) = shapes[i];
        let (more_rows, more_longest) = (rows + r, longest.max(seq));
        let added = padded(more_rows, more_longest) - padded(rows, longest);
        if padded(more_rows, more_longest) <= max_tokens && added <= r * seq + CALL_TOKENS {
            chosen.push(i);
            (rows, longest) = (more_rows, more_longest);
        }
    }
    chosen.sort_unstable();
    let batch = chosen.iter().filter_map(|&i| ready[i].take()).collect();
    (batch, ready.into_iter().flatten().collect())
}

/// Answers one request from its rows of the engine's output (`x` are its own inputs).
fn answer(engine: &LoadedModel, x: &Inputs, out: Result<Output, EngineError>, secs: f64, reply: Reply) {
    let answer = out
        .map_err(PredictError::Engine)
        .and_then(|out| postprocess::predictions(engine.signature.kind, &engine.labels, x, &out))
        .map(|predictions| Answer { predictions, backend: engine.model.backend(), engine_seconds: secs });
    let _ = reply.send(answer);
}

/// Takes requests from the front while they fit in `rows` inputs (always at least one).
fn take(pending: &mut VecDeque<Queued>, rows: usize) -> Vec<Queued> {
    let mut batch = Vec::new();
    let mut n = 0;
    while let Some(r) = pending.front() {
        if !batch.is_empty() && n + r.rows > rows {
            break;
        }
        n += r.rows;
        batch.extend(pending.pop_front());
    }
    batch
}

/// Stacks batches row-wise, padding every row to the longest.
pub fn concat<'a>(parts: impl Iterator<Item = &'a Inputs>, pad_id: i64) -> Inputs {
    let rows: Vec<_> = parts.flat_map(Inputs::rows).collect();
    Inputs::from_rows(&rows, pad_id)
}

/// Rows `from..from + rows` of a batch.
fn slice_inputs(x: &Inputs, from: usize, rows: usize) -> Inputs {
    let r = from * x.seq..(from + rows) * x.seq;
    Inputs {
        batch: rows,
        seq: x.seq,
        input_ids: x.input_ids[r.clone()].to_vec(),
        attention_mask: x.attention_mask[r.clone()].to_vec(),
        token_type_ids: x.token_type_ids[r].to_vec(),
    }
}

/// Rows `from..from + rows` of an output whose first axis is the batch.
fn slice_output(o: &Output, from: usize, rows: usize) -> Output {
    let per_row: usize = o.shape[1..].iter().product();
    let mut shape = o.shape.clone();
    shape[0] = rows;
    Output { shape, data: o.data[from * per_row..(from + rows) * per_row].to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::request::Request;

    fn inputs(rows: &[&[i64]]) -> Inputs {
        let seq = rows[0].len();
        Inputs {
            batch: rows.len(),
            seq,
            input_ids: rows.iter().flat_map(|r| r.iter().copied()).collect(),
            attention_mask: vec![1; rows.len() * seq],
            token_type_ids: vec![0; rows.len() * seq],
        }
    }

    #[test]
    fn concat_pads_rows_to_the_longest_and_slices_back() {
        let a = inputs(&[&[101, 7, 102]]);
        let b = inputs(&[&[101, 8, 9, 10, 102], &[101, 11, 12, 13, 102]]);
        let x = concat([&a, &b].into_iter(), 0);
        assert_eq!((x.batch, x.seq), (3, 5));
        assert_eq!(&x.input_ids[..5], &[101, 7, 102, 0, 0]);
        assert_eq!(&x.attention_mask[..5], &[1, 1, 1, 0, 0]);
        let back = slice_inputs(&x, 1, 2);
        assert_eq!(back.input_ids, b.input_ids);
        let out = Output { shape: vec![3, 2], data: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0] };
        assert_eq!(slice_output(&out, 1, 2), Output { shape: vec![2, 2], data: vec![2.0, 3.0, 4.0, 5.0] });
    }

    /// A request already tokenized to `rows` rows of `seq` tokens.
    fn tokenized(rows: usize, seq: usize) -> Queued {
        let now = Instant::now();
        let n = rows * seq;
        let x =
            Inputs { batch: rows, seq, input_ids: vec![7; n], attention_mask: vec![1; n], token_type_ids: vec![0; n] };
        Queued {
            request: Request::taken(),
            rows,
            reply: oneshot::channel().0,
            arrived: now,
            admitted: now,
            limit: None,
            caller: Default::default(),
            inputs: Some(x),
            span: tracing::Span::none(),
            queue: tracing::Span::none(),
        }
    }

    fn seqs(v: &[Queued]) -> Vec<usize> {
        v.iter().map(|q| q.inputs.as_ref().unwrap().seq).collect()
    }

    #[test]
    fn long_and_short_texts_batch_apart_within_the_token_budget() {
        // The oldest is long: the other long one joins, the short ones wait together.
        let mixed = [128, 16, 20, 120, 16].map(|s| tokenized(1, s)).into_iter().collect();
        let (batch, rest) = by_tokens(mixed, 512);
        assert_eq!((seqs(&batch), seqs(&rest)), (vec![128, 120], vec![16, 20, 16]));
        let (batch, rest) = by_tokens(rest, 512);
        assert_eq!((seqs(&batch), rest.len()), (vec![16, 20, 16], 0));
        // The budget caps padded tokens: 4 × 128 fit 512, a fifth does not.
        let long = (0..5).map(|_| tokenized(1, 128)).collect();
        let (batch, rest) = by_tokens(long, 512);
        assert_eq!((batch.len(), rest.len()), (4, 1));
        // A request over the budget still runs, alone.
        let (batch, rest) = by_tokens(vec![tokenized(8, 128), tokenized(1, 128)], 512);
        assert_eq!((batch.len(), rest.len()), (1, 1));
        assert_eq!(by_tokens(Vec::new(), 512).0.len(), 0);
    }

    #[test]
    fn take_fills_up_to_the_row_limit_but_never_leaves_a_request_behind_alone() {
        let req = |rows| {
            let request = Request::Texts { texts: vec!["a".into(); rows], pairs: None, truncate: true };
            let now = Instant::now();
            Queued {
                request,
                rows,
                reply: oneshot::channel().0,
                arrived: now,
                admitted: now,
                limit: None,
                caller: Default::default(),
                inputs: None,
                span: tracing::Span::none(),
                queue: tracing::Span::none(),
            }
        };
        let mut q: VecDeque<Queued> = [3, 1, 2, 1].into_iter().map(req).collect();
        assert_eq!(take(&mut q, 4).iter().map(|r| r.rows).collect::<Vec<_>>(), vec![3, 1]);
        assert_eq!(take(&mut q, 4).iter().map(|r| r.rows).collect::<Vec<_>>(), vec![2, 1]);
        let mut big: VecDeque<Queued> = [9, 1].into_iter().map(req).collect();
        assert_eq!(take(&mut big, 4).len(), 1, "a request larger than the limit runs alone");
    }
}
