//! The one table of error codes (docs/http-api.md): each code's HTTP status and Retry-After, with
//! its snake_case name derived from the variant (meilisearch's `make_error_codes!`), so no name is
//! typed twice. Domain errors say their code through `ErrorCode`; front ends (HTTP, the gateway)
//! render `{"error": sentence, "code": name}` with the table's status.

use std::sync::LazyLock;

use crate::serve::request::PredictError;

/// What an error is, for a client: one variant per stable code.
pub trait ErrorCode {
    fn error_code(&self) -> Code;
}

macro_rules! make_error_codes {
    ($($(#[$doc:meta])* $variant:ident => $status:literal, $retry:expr;)*) => {
        /// Every error code the node's and the gateway's APIs answer with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The HTTP status it answers with.
            pub fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }

            /// Seconds a client should wait before trying again, where waiting helps.
            pub fn retry_after(self) -> Option<u32> {
                match self {
                    $(Code::$variant => $retry,)*
                }
            }

            /// The variant's name as written in the table.
            fn variant(self) -> &'static str {
                match self {
                    $(Code::$variant => stringify!($variant),)*
                }
            }
        }
    };
}

make_error_codes! {
    /// A body or query that is not a request.
    MalformedRequest => 400, None;
    /// A path the server has no route for.
    NotFound => 404, None;
    /// A known path with a method it does not take.
    MethodNotAllowed => 405, None;
    UnknownModel => 404, None;
    BodyTooLarge => 413, None;
    BodyTimeout => 408, None;
    InvalidInput => 422, None;
    QueueFull => 429, Some(1);
    QueueTimeout => 503, Some(1);
    NotReady => 503, Some(5);
    ModelFailed => 503, Some(60);
    ShuttingDown => 503, Some(5);
    InferenceFailed => 500, None;
    /// The gateway cannot reach the model's node.
    NodeUnavailable => 503, Some(1);
    /// The model's node took longer than the gateway waits.
    UpstreamTimeout => 504, None;
    /// The model's node scales to zero and was not ready within the gateway's hold timeout.
    NodeStarting => 503, Some(5);
    /// An admin call without the bearer token, or with a wrong one.
    Unauthorized => 401, None;
    /// A reload whose plan and catalog cannot be served (unreadable, inconsistent, no such node).
    ReloadRefused => 409, None;
    /// A cold model that cannot be loaded now: the cold pool is held by models in use.
    ColdPoolFull => 503, Some(1);
    /// The client closed its side of the connection while its request waited (nginx's 499).
    ClientClosedRequest => 499, None;
    /// An asynchronous job id the node does not have (never, or its result has expired).
    UnknownJob => 404, None;
    /// Asynchronous requests on a node started without `--async-dir`.
    AsyncDisabled => 501, None;
    /// The job store could not take or read a job (its disk is full or failing).
    JobStoreFailed => 503, Some(1);
}

/// Each code's name, made once from its variant.
static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| Code::ALL.iter().map(|c| snake_case(c.variant())).collect());

impl Code {
    /// The stable snake_case name clients see (`QueueFull` → `queue_full`).
    pub fn name(self) -> &'static str {
        // ALL lists every variant in declaration order, so the discriminant indexes NAMES.
        NAMES[self as usize].as_str()
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn snake_case(camel: &str) -> String {
    let mut s = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

impl ErrorCode for PredictError {
    fn error_code(&self) -> Code {
        match self {
            PredictError::ShuttingDown => Code::ShuttingDown,
            PredictError::UnknownModel(_) => Code::UnknownModel,
            PredictError::NotReady(_) => Code::NotReady,
            PredictError::ModelFailed { .. } => Code::ModelFailed,
            PredictError::Invalid(_) => Code::InvalidInput,
            PredictError::QueueFull(_) | PredictError::Overloaded { .. } => Code::QueueFull,
            PredictError::PoolFull(_) => Code::ColdPoolFull,
            PredictError::QueueTimeout { .. } => Code::QueueTimeout,
            PredictError::ClientGone(_) => Code::ClientClosedRequest,
            PredictError::Engine(_) | PredictError::Inference(_) => Code::InferenceFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_variants() {
        assert_eq!(Code::QueueFull.name(), "queue_full");
        assert_eq!(Code::NotFound.name(), "not_found");
        assert_eq!(Code::ColdPoolFull.name(), "cold_pool_full");
        assert_eq!(Code::MalformedRequest.to_string(), "malformed_request");
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "ALL is in declaration order");
        }
    }

    #[test]
    fn names_and_statuses_are_those_documented() {
        // docs/http-api.md's error table, as clients rely on it.
        let doc = include_str!("../../docs/http-api.md");
        for c in Code::ALL {
            let (status, name) = (format!("| {} |", c.status()), format!("`{}`", c.name()));
            assert!(
                doc.lines().any(|l| l.starts_with(&status) && l.contains(&name)),
                "docs/http-api.md's error table has no row {status} … {name}"
            );
        }
    }
}
