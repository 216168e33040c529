//! Field access and value decoding over an hl7-parser structure.
//!
//! Guarantees:
//! - every accessor is total: a missing field, repetition, component or
//!   subcomponent reads as `""`; positions are 1-based and 0 reads as `""`
//!   (hl7-parser `debug_assert`s on 0, so it is never passed through);
//! - decoded text has HL7 escape sequences resolved by [`decode`], which is
//!   our own: hl7-parser 0.3's decoder slices by character index as if it
//!   were a byte index (wrong output, and a panic, after non-ASCII text),
//!   only knows `\X0D\`/`\X0A\` and joins components with the repetition
//!   separator.

use std::borrow::Cow;

use hl7_parser::message::{Field, Repeat, Segment, Separators};

use crate::event::{Code, Identifier, Location, PersonName, Provider, ProviderRole};
use crate::parse::error::ErrorLocation;

/// Resolves HL7 escape sequences:
/// `\F\ \S\ \T\ \R\ \E\` to the separators; `\Xhh..\` to the bytes it
/// encodes (as UTF-8 when they form valid UTF-8, else each byte as the
/// ISO-8859-1 character of that value); `\.br\` and `\.sp\` to a newline.
/// Highlighting (`\H\ \N\`), other formatting commands (`\.in\` ...),
/// locally defined (`\Z..\`) and character-set switching (`\C..\ \M..\`)
/// sequences, and unknown ones, are removed. An unterminated escape is kept
/// as text.
pub(crate) fn decode<'a>(raw: &'a str, seps: &Separators) -> Cow<'a, str> {
    let esc = seps.escape;
    if !raw.contains(esc) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find(esc) {
        out.push_str(rest.get(..pos).unwrap_or(""));
        let after = rest.get(pos + esc.len_utf8()..).unwrap_or("");
        let Some(end) = after.find(esc) else {
            // unterminated: keep the escape character and the rest as text
            out.push_str(rest.get(pos..).unwrap_or(""));
            return Cow::Owned(out);
        };
        let seq = after.get(..end).unwrap_or("");
        match seq {
            "F" => out.push(seps.field),
            "S" => out.push(seps.component),
            "T" => out.push(seps.subcomponent),
            "R" => out.push(seps.repetition),
            "E" => out.push(seps.escape),
            ".br" => out.push('\n'),
            s if s.starts_with(".sp") => out.push('\n'),
            s if s.starts_with('X') || s.starts_with('x') => {
                hex(s.get(1..).unwrap_or(""), &mut out)
            }
            _ => {}
        }
        rest = after.get(end + esc.len_utf8()..).unwrap_or("");
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn hex(digits: &str, out: &mut String) {
    if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return;
    }
    let bytes: Vec<u8> = (0..digits.len() / 2)
        .filter_map(|i| {
            let pair = digits.get(i * 2..i * 2 + 2)?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect();
    match std::str::from_utf8(&bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.extend(bytes.iter().map(|b| char::from(*b))),
    }
}

/// Component `c` (1-based) of a repetition, raw; `""` when absent.
pub(crate) fn comp<'m>(rep: &Repeat<'m>, c: usize) -> &'m str {
    c.checked_sub(1)
        .and_then(|i| rep.components.get(i))
        .map_or("", |x| x.raw_value())
}

/// Subcomponent `s` of component `c`, raw; `""` when absent.
pub(crate) fn sub<'m>(rep: &Repeat<'m>, c: usize, s: usize) -> &'m str {
    c.checked_sub(1)
        .and_then(|i| rep.components.get(i))
        .and_then(|x| s.checked_sub(1).and_then(|j| x.subcomponents.get(j)))
        .map_or("", |x| x.value)
}

/// One segment of a parsed message, with its separators and its 1-based
/// occurrence among the segments of the same id.
#[derive(Clone, Copy)]
pub(crate) struct Seg<'a, 'm> {
    pub(crate) seg: &'a Segment<'m>,
    pub(crate) seps: &'a Separators,
    /// Static id for error locations (empty when not a known segment).
    pub(crate) id: &'static str,
    pub(crate) occurrence: u32,
}

impl<'a, 'm> Seg<'a, 'm> {
    /// The segment id as sent.
    pub(crate) fn name(&self) -> &'m str {
        self.seg.name
    }

    /// Field `n` (1-based).
    pub(crate) fn field(&self, n: usize) -> Option<&'a Field<'m>> {
        n.checked_sub(1).and_then(|i| self.seg.fields.get(i))
    }

    /// The repetitions of field `n` (none when absent).
    pub(crate) fn reps(&self, n: usize) -> impl Iterator<Item = &'a Repeat<'m>> + use<'a, 'm> {
        self.field(n).into_iter().flat_map(|f| f.repeats.iter())
    }

    /// First repetition of field `n`.
    pub(crate) fn rep(&self, n: usize) -> Option<&'a Repeat<'m>> {
        self.field(n).and_then(|f| f.repeats.first())
    }

    /// Component `c` of the first repetition of field `n`, raw.
    pub(crate) fn comp_raw(&self, n: usize, c: usize) -> &'m str {
        self.rep(n).map_or("", |r| comp(r, c))
    }

    /// Component `c` of the first repetition of field `n`, decoded.
    pub(crate) fn comp(&self, n: usize, c: usize) -> String {
        self.dec(self.comp_raw(n, c))
    }

    /// Decodes a raw value with this message's separators.
    pub(crate) fn dec(&self, raw: &str) -> String {
        decode(raw, self.seps).into_owned()
    }

    /// The location of field `n` of this segment.
    pub(crate) fn loc(&self, n: u32) -> ErrorLocation {
        ErrorLocation::field(self.id, self.occurrence, n)
    }

    /// CE/CWE of the first repetition of field `n`.
    pub(crate) fn code(&self, n: usize) -> Code {
        self.rep(n).map(|r| self.code_of(r)).unwrap_or_default()
    }

    /// CE/CWE/CNE: code, text, coding system.
    pub(crate) fn code_of(&self, r: &Repeat<'_>) -> Code {
        Code {
            code: self.dec(comp(r, 1)),
            text: self.dec(comp(r, 2)),
            system: self.dec(comp(r, 3)),
        }
    }

    /// CX: value, authority (CX.4.1), type (CX.5).
    pub(crate) fn cx(&self, r: &Repeat<'_>) -> Identifier {
        Identifier {
            value: self.dec(comp(r, 1)),
            authority: self.dec(sub(r, 4, 1)),
            type_code: self.dec(comp(r, 5)),
        }
    }

    /// XPN: family (XPN.1.1), given (XPN.2), middle (XPN.3).
    pub(crate) fn xpn(&self, r: &Repeat<'_>) -> PersonName {
        PersonName {
            family: self.dec(sub(r, 1, 1)),
            given: self.dec(comp(r, 2)),
            middle: self.dec(comp(r, 3)),
        }
    }

    /// PL: unit (PL.1), room (PL.2), bed (PL.3), facility (PL.4), each its
    /// first subcomponent. `None` when all four are empty.
    pub(crate) fn pl(&self, n: usize) -> Option<Location> {
        let r = self.rep(n)?;
        let loc = Location {
            unit: self.dec(sub(r, 1, 1)),
            room: self.dec(sub(r, 2, 1)),
            bed: self.dec(sub(r, 3, 1)),
            facility: self.dec(sub(r, 4, 1)),
        };
        (loc != Location::default()).then_some(loc)
    }

    /// Every non-empty XCN repetition of field `n` as a provider.
    pub(crate) fn providers(&self, n: usize, role: ProviderRole, role_code: &str) -> Vec<Provider> {
        self.reps(n)
            .filter_map(|r| {
                let p = Provider {
                    role,
                    role_code: role_code.to_string(),
                    id: Identifier {
                        value: self.dec(comp(r, 1)),
                        authority: self.dec(sub(r, 9, 1)),
                        type_code: self.dec(comp(r, 13)),
                    },
                    name: PersonName {
                        family: self.dec(sub(r, 2, 1)),
                        given: self.dec(comp(r, 3)),
                        middle: self.dec(comp(r, 4)),
                    },
                };
                (!p.id.value.is_empty() || p.name != PersonName::default()).then_some(p)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        let s = Separators::default();
        let d = |r: &str| decode(r, &s).into_owned();
        assert_eq!(d(r"a\F\b\S\c\T\d\R\e\E\f"), "a|b^c&d~e\\f");
        assert_eq!(d(r"\X41\\X4142\"), "AAB");
        assert_eq!(d(r"caf\XC3A9\ \XE9\"), "café é");
        assert_eq!(d(r"l1\.br\l2\.sp\l3"), "l1\nl2\nl3");
        assert_eq!(d(r"\H\bold\N\ \Zfoo\\.in+4\x"), "bold x");
        assert_eq!(d(r"éé\F\ü"), "éé|ü");
        assert_eq!(d(r"open\X4"), r"open\X4");
        assert_eq!(d(r"\X4\"), "");
        assert_eq!(d("plain"), "plain");
        let custom = Separators {
            field: '#',
            component: '$',
            repetition: '*',
            escape: '!',
            subcomponent: '@',
            lenient_newlines: false,
        };
        assert_eq!(decode("a!F!b!S!c!E!", &custom), "a#b$c!");
    }
}
