//! Protobuf at the wire level, for writing into a message without decoding it whole: its
//! top-level fields as byte ranges, and the replacement of one length-delimited field, at the
//! top level or down a path of nested messages, with every other byte copied as is. So a field
//! `k8s-pb` does not know (one a newer Kubernetes added), at any depth, survives a write. Keys,
//! varints and lengths go through prost's encoding helpers.

use anyhow::{ensure, Context, Result};
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, skip_field, WireType};

/// The byte ranges of `msg`'s top-level fields: (tag, start, end), the key included.
pub(super) fn fields(msg: &[u8]) -> Result<Vec<(u32, usize, usize)>> {
    let mut out = vec![];
    let mut buf = msg;
    while !buf.is_empty() {
        let start = msg.len() - buf.len();
        let (tag, wt) = decode_key(&mut buf).context("a protobuf field key")?;
        skip_field(wt, tag, &mut buf, Default::default()).context("a protobuf field")?;
        out.push((tag, start, msg.len() - buf.len()));
    }
    Ok(out)
}

/// `msg` without its top-level fields numbered `drop`, then `append` (encoded fields).
pub(super) fn splice(msg: &[u8], drop: &[u32], append: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(msg.len() + append.len());
    for (tag, a, b) in fields(msg)? {
        if !drop.contains(&tag) {
            out.extend_from_slice(&msg[a..b]);
        }
    }
    out.extend_from_slice(append);
    Ok(out)
}

/// The payload of the length-delimited field `msg[a..b]` (as [`fields`] gives it).
fn body(msg: &[u8], a: usize, b: usize) -> Result<&[u8]> {
    let mut buf = &msg[a..b];
    let (tag, wt) = decode_key(&mut buf)?;
    ensure!(
        wt == WireType::LengthDelimited,
        "field {tag} is not a message or bytes"
    );
    let len = usize::try_from(decode_varint(&mut buf)?)?;
    ensure!(len == buf.len(), "field {tag} has a wrong length");
    Ok(buf)
}

/// The payload of the (last) length-delimited top-level field `tag` of `msg`.
pub(super) fn payload(msg: &[u8], tag: u32) -> Result<Option<Vec<u8>>> {
    Ok(occurrences(msg, tag)?.pop().map(<[u8]>::to_vec))
}

/// The payloads of every length-delimited top-level field `tag` of `msg`, in order (the
/// elements of a repeated field).
pub(super) fn occurrences(msg: &[u8], tag: u32) -> Result<Vec<&[u8]>> {
    fields(msg)?
        .into_iter()
        .filter(|(t, _, _)| *t == tag)
        .map(|(_, a, b)| body(msg, a, b))
        .collect()
}

/// One length-delimited field (a message, bytes or a string).
pub(super) fn message_field(tag: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    encode_key(tag, WireType::LengthDelimited, &mut out);
    encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// One step of a path into nested messages: a field number and, for a repeated field, which
/// element (`None`: a singular field, which must occur at most once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    pub(super) tag: u32,
    pub(super) nth: Option<usize>,
}

impl Step {
    /// A singular field.
    pub(super) const fn one(tag: u32) -> Self {
        Step { tag, nth: None }
    }
}

/// The range of the field `step` names in `msg` (none when a singular field is absent).
fn find(msg: &[u8], step: Step) -> Result<Option<(usize, usize)>> {
    let same: Vec<(usize, usize)> = fields(msg)?
        .into_iter()
        .filter(|(t, _, _)| *t == step.tag)
        .map(|(_, a, b)| (a, b))
        .collect();
    match step.nth {
        None => {
            // protobuf would merge the copies of a singular message; imgmode writes none
            ensure!(
                same.len() <= 1,
                "field {} occurs {} times where it is singular",
                step.tag,
                same.len()
            );
            Ok(same.first().copied())
        }
        Some(i) => same.get(i).copied().map(Some).with_context(|| {
            format!(
                "field {} has {} elements, not an element {i}",
                step.tag,
                same.len()
            )
        }),
    }
}

/// The payload of the length-delimited field at `path` (none when a message on the way, or
/// the field, is absent).
pub(super) fn read<'a>(msg: &'a [u8], path: &[Step]) -> Result<Option<&'a [u8]>> {
    let Some((step, rest)) = path.split_first() else {
        return Ok(Some(msg));
    };
    match find(msg, *step)? {
        Some((a, b)) => read(body(msg, a, b)?, rest),
        None => Ok(None),
    }
}

/// `msg` with the length-delimited field at `path` holding `value`: the field and every
/// message around it rewritten in place (their lengths follow), every other byte copied as is.
/// An absent singular field or message on the way is added at the end of its message; an
/// element of a repeated field must exist.
pub(super) fn replace(msg: &[u8], path: &[Step], value: &[u8]) -> Result<Vec<u8>> {
    let (step, rest) = path.split_first().context("an empty protobuf field path")?;
    let at = find(msg, *step)?;
    let inner = match (at, rest.is_empty()) {
        (_, true) => value.to_vec(),
        (Some((a, b)), false) => replace(body(msg, a, b)?, rest, value)?,
        (None, false) => replace(&[], rest, value)?,
    };
    let field = message_field(step.tag, &inner);
    Ok(match at {
        Some((a, b)) => [&msg[..a], &field, &msg[b..]].concat(),
        None => [msg, &field].concat(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(tag: u32) -> Step {
        Step { tag, nth: None }
    }

    #[test]
    fn a_nested_field_is_replaced_in_place_and_the_rest_kept() {
        // {1: "a", 2: [{3: "x", 9: "keep"}, {3: "y"}], 7: "tail"}
        let e0 = [message_field(3, b"x"), message_field(9, b"keep")].concat();
        let e1 = message_field(3, b"y");
        let msg = [
            message_field(1, b"a"),
            message_field(2, &e0),
            message_field(2, &e1),
            message_field(7, b"tail"),
        ]
        .concat();
        let p = |i| {
            [
                Step {
                    tag: 2,
                    nth: Some(i),
                },
                one(3),
            ]
        };
        assert_eq!(read(&msg, &p(1)).unwrap(), Some(&b"y"[..]));
        let new = replace(&msg, &p(0), b"longer value").unwrap();
        let want = [
            message_field(1, b"a"),
            message_field(
                2,
                &[message_field(3, b"longer value"), message_field(9, b"keep")].concat(),
            ),
            message_field(2, &e1),
            message_field(7, b"tail"),
        ]
        .concat();
        assert_eq!(new, want);
        // and back: the original bytes
        assert_eq!(replace(&new, &p(0), b"x").unwrap(), msg);
        // an absent message on the way is added; a missing element is refused
        let added = replace(&msg, &[one(5), one(6)], b"v").unwrap();
        assert_eq!(read(&added, &[one(5), one(6)]).unwrap(), Some(&b"v"[..]));
        assert_eq!(&added[..msg.len()], &msg[..]);
        let e = replace(&msg, &p(2), b"v").unwrap_err().to_string();
        assert!(
            e.contains("field 2 has 2 elements, not an element 2"),
            "{e}"
        );
        let e = read(&msg, &[one(2), one(3)]).unwrap_err().to_string();
        assert!(
            e.contains("field 2 occurs 2 times where it is singular"),
            "{e}"
        );
        assert_eq!(read(&msg, &[one(4)]).unwrap(), None);
    }
}
