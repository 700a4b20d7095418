//! JSON bodies: one object, an array of objects, or NDJSON (one object per line).
//!
//! NDJSON is chosen by a `Content-Type` naming `ndjson` or `jsonlines`, or when a body
//! starting with `{` holds several objects on separate lines. Each record is parsed on its
//! own, so one bad line does not spoil the others; a body that is not JSON at all is one
//! rejected record.

use serde_json::Value;
use serde_json::value::RawValue;
use storesync_protocol::validate::{
    Context, FieldError, Rejection, adjustment_from_json, parse_json, scan_from_json,
    transaction_from_json,
};

use super::{InputError, RecordKind, submission};
use crate::writer::{Record, Submission};

/// Validates one JSON value as `kind`.
pub fn validate(
    value: &Value,
    kind: RecordKind,
    ctx: &Context<'_>,
) -> Result<Record, Vec<FieldError>> {
    let result: Result<Record, Rejection> = match kind {
        RecordKind::Transaction => transaction_from_json(value, ctx).map(Record::Transaction),
        RecordKind::Scan => scan_from_json(value, ctx).map(Record::Scan),
        RecordKind::Adjustment => adjustment_from_json(value, ctx).map(Record::Adjustment),
    };
    result.map_err(|r| r.errors)
}

fn one(bytes: &[u8], kind: RecordKind, ctx: &Context<'_>, source: &str) -> Submission {
    let parsed = parse_json(bytes, ctx.limits)
        .map_err(|r| r.errors)
        .and_then(|value| validate(&value, kind, ctx));
    submission(source, kind, bytes.to_vec(), parsed)
}

fn is_ndjson(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.contains("ndjson") || ct.contains("jsonlines") || ct.contains("json-seq")
    })
}

/// Splits and validates a body. `records_max` bounds array elements and NDJSON lines.
pub fn parse_body(
    body: &[u8],
    content_type: Option<&str>,
    kind: RecordKind,
    ctx: &Context<'_>,
    records_max: usize,
    source: &str,
) -> Result<Vec<Submission>, InputError> {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    if is_ndjson(content_type) {
        return ndjson(body, kind, ctx, records_max, source);
    }
    match first {
        Some(b'[') => {
            // Elements as the bytes that arrived: a rejected one is kept exactly as sent.
            let elements: Vec<&RawValue> = match serde_json::from_slice(body) {
                Ok(elements) => elements,
                Err(e) => {
                    let errors = vec![FieldError {
                        field: "$".into(),
                        reason: format!("invalid JSON: {e}"),
                    }];
                    return Ok(vec![submission(source, kind, body.to_vec(), Err(errors))]);
                }
            };
            if elements.len() > records_max {
                return Err(InputError::TooMany {
                    what: "array",
                    count: elements.len(),
                    limit_name: "records_per_request_max",
                    limit: records_max,
                });
            }
            Ok(elements
                .into_iter()
                .map(|element| {
                    let raw = element.get().as_bytes();
                    if raw.len() > ctx.limits.record_bytes_max {
                        let errors = vec![FieldError {
                            field: "$".into(),
                            reason: format!(
                                "record is {} bytes, more than record_bytes_max = {}",
                                raw.len(),
                                ctx.limits.record_bytes_max
                            ),
                        }];
                        submission(source, kind, raw.to_vec(), Err(errors))
                    } else {
                        one(raw, kind, ctx, source)
                    }
                })
                .collect())
        }
        Some(b'{') => {
            let single = one(body, kind, ctx, source);
            let several_lines = body.iter().filter(|b| **b == b'\n').count() > 0;
            let trailing = matches!(&single.parsed, Err(errors)
                if errors.iter().any(|e| e.field == "$" && e.reason.contains("trailing characters")));
            if several_lines && trailing {
                ndjson(body, kind, ctx, records_max, source)
            } else {
                Ok(vec![single])
            }
        }
        _ => Ok(vec![one(body, kind, ctx, source)]),
    }
}

fn ndjson(
    body: &[u8],
    kind: RecordKind,
    ctx: &Context<'_>,
    records_max: usize,
    source: &str,
) -> Result<Vec<Submission>, InputError> {
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .collect();
    if lines.len() > records_max {
        return Err(InputError::TooMany {
            what: "NDJSON body",
            count: lines.len(),
            limit_name: "records_per_request_max",
            limit: records_max,
        });
    }
    Ok(lines
        .into_iter()
        .map(|line| one(line, kind, ctx, source))
        .collect())
}
