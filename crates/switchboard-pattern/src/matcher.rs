//! The many-rule matcher.
//!
//! # Layout
//!
//! * A **path table** holds one node per dotted path prefix that some rule
//!   mentions, joined by edges keyed by one path segment. An event key that
//!   holds dots is followed segment by segment, which gives aws/event-ruler's
//!   nested/dotted key equivalence without building path strings per event.
//! * A node that rules test directly owns a [`FieldIndex`]: hash maps for
//!   exact strings, numbers and folded strings, hash-of-prefix/suffix maps
//!   probed once per distinct operand length, and short lists for the
//!   operators that need a per-value check (wildcard, numeric, cidr,
//!   anything-but). Up to 8 string operands of a kind are scanned; past
//!   that, operands under 8 bytes are keyed by their bytes packed into a
//!   `u64`, and each table sits behind a small Bloom [`Filter`] so that the
//!   many probes that miss stay in cache at thousands of rules.
//! * Each rule is expanded into **branches** (its `$or` combinations); each
//!   branch is a conjunction of **slots** (one per pattern field). An index
//!   entry points at the slots it satisfies.
//!
//! Matching an event walks only the mentioned paths, looks each leaf up in
//! its field index, and counts satisfied slots per branch (a branch of one
//! required slot matches its rule on the spot); a branch whose
//! count reaches its number of required slots becomes a candidate, which is
//! then checked for `exists: false` fields and array consistency. All
//! per-event state lives in a reusable [`Scratch`], so matching does not
//! allocate once the scratch has grown.

use std::cell::RefCell;

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;

use crate::error::EventError;
use crate::json::{Cursor, Literal, first_quote_where, unescape};
use crate::pattern::{AnythingBut, Cond, Pattern, Scalar};
use crate::value::{
    Cidr, NumKey, Range, Wildcard, bytes_eq, ends_with, fold_bytes_into, fold_into,
    num_key_from_literal, starts_with, write_number_literal,
};

const NONE: u32 = u32::MAX;
/// Nesting (objects and arrays on mentioned paths) followed before giving up.
pub const MAX_EVENT_DEPTH: usize = 512;

/// A compiled set of named rules.
///
/// Matching cost depends on the event (the fields rules mention and their
/// values), not on the number of rules, except for operators evaluated per
/// value: `wildcard`, `numeric`, `cidr` and `anything-but` conditions on the
/// same field are checked one by one.
#[derive(Debug)]
pub struct Matcher {
    rules: Vec<Option<RuleEntry>>,
    free_rules: Vec<u32>,
    by_name: FxHashMap<Box<str>, u32>,
    next_seq: u64,
    branches: Vec<BranchEntry>,
    free_branches: Vec<u32>,
    slots: Vec<SlotEntry>,
    free_slots: Vec<u32>,
    nodes: Vec<PathNode>,
    free_nodes: Vec<u32>,
    node_by_path: FxHashMap<Box<str>, u32>,
    /// Every path segment some rule mentions: an event key can reach a path
    /// node only if its first dot-separated segment is one of these (see
    /// `first_key_ahead`).
    segments: Segments,
    /// Branches without required slots (only `exists: false` fields, or
    /// empty): candidates for every event.
    always: Vec<u32>,
}

#[derive(Debug)]
struct RuleEntry {
    name: Box<str>,
    /// Insertion order, used to order results.
    seq: u64,
    pattern: Pattern,
    /// Branch ids, parallel to `pattern.branches`.
    branches: Vec<u32>,
}

#[derive(Debug, Default, Clone)]
struct BranchEntry {
    rule: u32,
    /// Number of slots that must be hit (those without `absent_ok`).
    required: u32,
    /// Slot ids, parallel to the pattern branch's slots.
    slots: Vec<u32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SlotEntry {
    branch: u32,
    node: u32,
    /// The branch's rule.
    rule: u32,
    absent_ok: bool,
    /// The branch's only slot, and a required one: a hit matches the rule
    /// outright, with no counting, candidate check or hit list (no other
    /// slot to be consistent with).
    solo: bool,
}

#[derive(Debug, Default)]
struct PathNode {
    /// Edges by event key, for small fan-out.
    edges: Vec<(Box<[u8]>, u32)>,
    /// Parallel to `edges`: each key's length and first 8 bytes packed, so
    /// that most keys are rejected or accepted by two integer compares.
    heads: Vec<(usize, u64)>,
    /// Same edges as a map once there are many.
    edge_map: Option<FxHashMap<Box<[u8]>, u32>>,
    /// Some child has children, so a dotted event key may resolve from here
    /// (may stay set after removals; that only costs a dot scan).
    deep: bool,
    /// Number of slots whose path is this node or passes through it.
    refs: u32,
    /// Present when some slot tests this exact path.
    index: Option<Box<FieldIndex>>,
}

const EDGE_MAP_THRESHOLD: usize = 8;

impl PathNode {
    #[inline(always)]
    fn child(&self, key: &[u8]) -> Option<u32> {
        self.child_packed(key, pack8(key))
    }

    /// [`PathNode::child`] given `head = pack8(key)`.
    #[inline(always)]
    fn child_packed(&self, key: &[u8], head: u64) -> Option<u32> {
        if let Some(map) = &self.edge_map {
            return map.get(key).copied();
        }
        // Packed-word compares beat a byte loop (and a `memcmp` call) on
        // the short keys of real events; bytes past 8 are compared only
        // when length and head agree.
        let at = self
            .heads
            .iter()
            .position(|&(len, h)| len == key.len() && h == head)?;
        let (k, id) = &self.edges[at];
        if key.len() <= 8 || bytes_eq(&k[8..], &key[8..]) {
            return Some(*id);
        }
        // Another edge may share length and head: look at the rest.
        self.edges[at + 1..]
            .iter()
            .find(|(k, _)| bytes_eq(k, key))
            .map(|&(_, id)| id)
    }

    fn add_edge(&mut self, key: &[u8], to: u32) {
        if self.child(key).is_some() {
            return;
        }
        self.edges.push((key.into(), to));
        self.heads.push((key.len(), pack8(key)));
        match &mut self.edge_map {
            Some(map) => {
                map.insert(key.into(), to);
            }
            None if self.edges.len() > EDGE_MAP_THRESHOLD => {
                self.edge_map = Some(self.edges.iter().cloned().collect());
            }
            None => {}
        }
    }

    fn remove_edges_to(&mut self, to: u32) {
        self.edges.retain(|&(_, id)| id != to);
        self.heads = self
            .edges
            .iter()
            .map(|(k, _)| (k.len(), pack8(k)))
            .collect();
        if let Some(map) = &mut self.edge_map {
            map.retain(|_, id| *id != to);
            if self.edges.len() <= EDGE_MAP_THRESHOLD {
                self.edge_map = None;
            }
        }
    }

    fn has_children(&self) -> bool {
        !self.edges.is_empty()
    }
}

/// The path segments rules mention, counted by the interned paths holding
/// them, with what a quick test of event bytes needs.
#[derive(Debug, Default)]
struct Segments {
    count: FxHashMap<Box<[u8]>, u32>,
    /// Number of distinct segments by first byte: most bytes after a quote
    /// start none, and are turned down by one load.
    by_first: Vec<u32>,
    /// Longest segment ever added (removals leave it high, which only
    /// lengthens the search for a segment's end).
    max_len: usize,
}

impl Segments {
    fn add(&mut self, segment: &[u8]) {
        let n = self.count.entry(segment.into()).or_insert(0);
        *n += 1;
        if *n == 1
            && let Some(&first) = segment.first()
        {
            self.by_first.resize(256, 0);
            self.by_first[usize::from(first)] += 1;
            self.max_len = self.max_len.max(segment.len());
        }
    }

    fn remove(&mut self, segment: &[u8]) {
        let Some(n) = self.count.get_mut(segment) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.count.remove(segment);
            if let Some(&first) = segment.first() {
                self.by_first[usize::from(first)] -= 1;
            }
        }
    }

    /// Whether some rule mentions the empty key, which any quote could
    /// start.
    fn has_empty(&self) -> bool {
        self.count.contains_key(&b""[..])
    }

    /// Whether the bytes at `at` spell a segment followed by a quote or a
    /// dot: the start of a key whose first segment rules mention.
    #[inline]
    fn starts_at(&self, b: &[u8], at: usize) -> bool {
        let Some(&first) = b.get(at) else {
            return false;
        };
        if self
            .by_first
            .get(usize::from(first))
            .is_none_or(|&n| n == 0)
        {
            return false;
        }
        let window = &b[at..b.len().min(at + self.max_len + 1)];
        let Some(end) = window.iter().position(|&c| c == b'"' || c == b'.') else {
            return false;
        };
        self.count.contains_key(&window[..end])
    }
}

/// Prefixes (or suffixes) by content, probed once per distinct length.
/// Few operands are simply scanned.
///
/// Operands of at most 8 bytes (nearly all of them) live in one map per
/// length keyed by the operand packed into a `u64`: the value's first (or
/// last) 8 bytes are loaded once, and each length then costs a mask, an
/// integer hash and an integer compare instead of hashing a slice and
/// comparing it with `memcmp` (measured: 4 % of the 5,000-prefix-rule
/// profile was `memcmp`).
#[derive(Debug, Default)]
struct Affix {
    /// Per distinct operand length up to 8, ascending: packed operand →
    /// slots, and a filter over the packed operands.
    short: Vec<(usize, FxHashMap<u64, Vec<u32>>, Filter)>,
    /// Operands longer than 8 bytes, by content.
    long: FxHashMap<Box<[u8]>, Vec<u32>>,
    /// Distinct lengths in `long`, ascending, with how many operands have each.
    long_lens: Vec<(usize, u32)>,
    /// Every (operand, slot), for the linear scan.
    all: Vec<(Box<[u8]>, u32)>,
}

/// Up to this many operands a linear scan beats hashing every length.
const AFFIX_LINEAR_MAX: usize = 8;

/// Little-endian packing of at most 8 bytes, zero padded. Injective among
/// inputs of one length.
///
/// Written without a variable-length copy, which compiles to a `memcpy`
/// call: two overlapping 4-byte loads cover lengths 4 to 7.
#[inline(always)]
fn pack8(b: &[u8]) -> u64 {
    if let Some(w) = b.first_chunk::<8>() {
        return u64::from_le_bytes(*w);
    }
    let n = b.len();
    if n >= 4 {
        let lo = b.first_chunk::<4>().map_or(0, |w| u32::from_le_bytes(*w));
        let hi = b.last_chunk::<4>().map_or(0, |w| u32::from_le_bytes(*w));
        // The overlapping bytes are equal in both loads, so OR is exact.
        return u64::from(lo) | (u64::from(hi) << (8 * (n - 4)));
    }
    let mut w = 0u64;
    for (i, &c) in b.iter().enumerate() {
        w |= u64::from(c) << (8 * i);
    }
    w
}

/// The first `len` (at most 8) bytes of a packed word.
#[inline]
fn low_bytes(w: u64, len: usize) -> u64 {
    if len >= 8 {
        w
    } else {
        w & ((1u64 << (8 * len)) - 1)
    }
}

impl Affix {
    fn add(&mut self, key: &[u8], slot: u32) {
        self.all.push((key.into(), slot));
        if key.len() <= 8 {
            let i = match self.short.binary_search_by_key(&key.len(), |(l, ..)| *l) {
                Ok(i) => i,
                Err(i) => {
                    let table = (key.len(), FxHashMap::default(), Filter::default());
                    self.short.insert(i, table);
                    i
                }
            };
            let (_, map, filter) = &mut self.short[i];
            let k = pack8(key);
            map.entry(k).or_default().push(slot);
            filter.insert(k, map.keys().copied());
            return;
        }
        self.long.entry(key.into()).or_default().push(slot);
        match self.long_lens.binary_search_by_key(&key.len(), |&(l, _)| l) {
            Ok(i) => self.long_lens[i].1 += 1,
            Err(i) => self.long_lens.insert(i, (key.len(), 1)),
        }
    }

    fn remove(&mut self, key: &[u8], slot: u32) {
        if let Some(pos) = self
            .all
            .iter()
            .position(|(k, s)| *s == slot && &k[..] == key)
        {
            self.all.swap_remove(pos);
        }
        if key.len() <= 8 {
            if let Ok(i) = self.short.binary_search_by_key(&key.len(), |(l, ..)| *l) {
                remove_id(&mut self.short[i].1, &pack8(key), slot);
                if self.short[i].1.is_empty() {
                    self.short.remove(i);
                }
            }
            return;
        }
        if remove_id(&mut self.long, key, slot)
            && let Ok(i) = self.long_lens.binary_search_by_key(&key.len(), |&(l, _)| l)
        {
            self.long_lens[i].1 -= 1;
            if self.long_lens[i].1 == 0 {
                self.long_lens.remove(i);
            }
        }
    }

    #[inline]
    fn lookup(&self, v: &[u8], suffix: bool, mut emit: impl FnMut(u32)) {
        if self.all.len() <= AFFIX_LINEAR_MAX {
            for (k, s) in &self.all {
                let hit = if suffix {
                    ends_with(v, k)
                } else {
                    starts_with(v, k)
                };
                if hit {
                    emit(*s);
                }
            }
            return;
        }
        if !self.short.is_empty() {
            // The value's first (or last) up to 8 bytes, packed once.
            let n = v.len().min(8);
            let w = if suffix {
                pack8(&v[v.len() - n..])
            } else {
                pack8(v)
            };
            for (len, map, filter) in &self.short {
                let len = *len;
                if len > n {
                    break;
                }
                let key = if suffix {
                    // The last `len` of the `n` packed bytes (`len` 0 shifts
                    // all 8 out when `n` is 8: key 0, as `pack8(b"")`).
                    w.checked_shr(8 * (n - len) as u32).unwrap_or(0)
                } else {
                    low_bytes(w, len)
                };
                if filter.may_contain(key)
                    && let Some(ids) = map.get(&key)
                {
                    ids.iter().for_each(|&s| emit(s));
                }
            }
        }
        for &(len, _) in &self.long_lens {
            if len > v.len() {
                break;
            }
            let key = if suffix {
                &v[v.len() - len..]
            } else {
                &v[..len]
            };
            if let Some(ids) = self.long.get(key) {
                ids.iter().for_each(|&s| emit(s));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// A one-hash Bloom filter over `u64` keys, 16 to 64 bits per key, put in
/// front of the hashed operand tables. At thousands of rules those tables
/// no longer stay in cache next to the streamed events, and most probes
/// miss: a miss then touches one small bit array instead of a hash table
/// (measured on the 5,000-rule scaling bench). No false negatives; removal
/// leaves bits set, which only costs extra probes until the next rebuild.
#[derive(Debug, Default)]
struct Filter {
    words: Vec<u64>,
    /// `64 - log2(bits)`: Fibonacci hashing keeps the top bits.
    shift: u32,
    /// Keys inserted since the last rebuild.
    keys: usize,
}

impl Filter {
    #[inline(always)]
    fn pos(&self, key: u64) -> (usize, u64) {
        let b = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize;
        (b / 64, 1u64 << (b % 64))
    }

    #[inline(always)]
    fn may_contain(&self, key: u64) -> bool {
        if self.words.is_empty() {
            return true;
        }
        let (w, m) = self.pos(key);
        self.words[w] & m != 0
    }

    /// Adds `key`; when the filter is full, rebuilds it from `all` (every
    /// current key, `key` included) at twice the size.
    fn insert(&mut self, key: u64, all: impl Iterator<Item = u64>) {
        if self.keys * 16 >= self.words.len() * 64 {
            self.rebuild(all);
            return;
        }
        let (w, m) = self.pos(key);
        self.words[w] |= m;
        self.keys += 1;
    }

    fn rebuild(&mut self, all: impl Iterator<Item = u64>) {
        let keys: Vec<u64> = all.collect();
        let bits = (keys.len() * 32).next_power_of_two().max(64);
        self.words = vec![0; bits / 64];
        self.shift = 64 - bits.trailing_zeros();
        self.keys = 0;
        for k in keys {
            let (w, m) = self.pos(k);
            self.words[w] |= m;
            self.keys += 1;
        }
    }
}

/// A `u64` digest of any string for [`Filter`]: exact for strings under 8
/// bytes, a mix of the first and last 8 bytes and the length otherwise.
#[inline(always)]
fn filter_key(b: &[u8]) -> u64 {
    match short_key(b) {
        Some(k) => k,
        None => pack8(b) ^ pack8(&b[b.len() - 8..]).rotate_left(29) ^ (b.len() as u64),
    }
}

/// Strings by content (exact values, folded `equals-ignore-case` operands).
/// Few operands are scanned; more are hashed, those under 8 bytes as one
/// packed `u64` (bytes and length) so the probe needs no `memcmp`.
#[derive(Debug, Default)]
struct StrIndex {
    /// Every (operand, slot), for the linear scan.
    all: Vec<(Box<[u8]>, u32)>,
    short: FxHashMap<u64, Vec<u32>>,
    long: FxHashMap<Box<[u8]>, Vec<u32>>,
    /// Over `filter_key` of every operand.
    filter: Filter,
}

/// Up to this many operands a linear scan (length compare first) beats a hash.
const STR_LINEAR_MAX: usize = 8;

/// `b` packed with its length in the top byte, for `b` under 8 bytes.
#[inline(always)]
fn short_key(b: &[u8]) -> Option<u64> {
    (b.len() < 8).then(|| pack8(b) | ((b.len() as u64) << 56))
}

impl StrIndex {
    fn add(&mut self, key: &[u8], slot: u32) {
        self.all.push((key.into(), slot));
        self.filter
            .insert(filter_key(key), self.all.iter().map(|(k, _)| filter_key(k)));
        match short_key(key) {
            Some(k) => self.short.entry(k).or_default().push(slot),
            None => self.long.entry(key.into()).or_default().push(slot),
        }
    }

    fn remove(&mut self, key: &[u8], slot: u32) {
        if let Some(pos) = self
            .all
            .iter()
            .position(|(k, s)| *s == slot && &k[..] == key)
        {
            self.all.swap_remove(pos);
        }
        match short_key(key) {
            Some(k) => remove_id(&mut self.short, &k, slot),
            None => remove_id(&mut self.long, key, slot),
        };
    }

    #[inline]
    fn lookup(&self, v: &[u8], mut emit: impl FnMut(u32)) {
        if self.all.len() <= STR_LINEAR_MAX {
            for (k, s) in &self.all {
                if bytes_eq(k, v) {
                    emit(*s);
                }
            }
            return;
        }
        let ids = match short_key(v) {
            Some(k) if self.filter.may_contain(k) => self.short.get(&k),
            Some(_) => None,
            None if self.filter.may_contain(filter_key(v)) => self.long.get(v),
            None => None,
        };
        if let Some(ids) = ids {
            ids.iter().for_each(|&s| emit(s));
        }
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// Removes one `slot` from the list under `key`; returns whether it was there.
fn remove_id<K, Q>(map: &mut FxHashMap<K, Vec<u32>>, key: &Q, slot: u32) -> bool
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let Some(ids) = map.get_mut(key) else {
        return false;
    };
    let Some(pos) = ids.iter().position(|&s| s == slot) else {
        return false;
    };
    ids.swap_remove(pos);
    if ids.is_empty() {
        map.remove(key);
    }
    true
}

fn remove_from_list<T>(list: &mut Vec<(T, u32)>, slot: u32) {
    if let Some(pos) = list.iter().position(|(_, s)| *s == slot) {
        list.swap_remove(pos);
    }
}

/// An `anything-but` condition compiled for quick exclusion tests.
#[derive(Debug)]
struct AnythingButIndex {
    strings: FxHashSet<Box<[u8]>>,
    numbers: FxHashSet<NumKey>,
    prefixes: Vec<Box<[u8]>>,
    suffixes: Vec<Box<[u8]>>,
    folded: FxHashSet<Box<[u8]>>,
    wildcards: Vec<Wildcard>,
}

impl AnythingButIndex {
    fn new(ab: &AnythingBut) -> Self {
        let mut out = Self {
            strings: FxHashSet::default(),
            numbers: FxHashSet::default(),
            prefixes: Vec::new(),
            suffixes: Vec::new(),
            folded: FxHashSet::default(),
            wildcards: Vec::new(),
        };
        match ab {
            AnythingBut::Values(values) => {
                for v in values {
                    match v {
                        Scalar::Str(s) => {
                            out.strings.insert(s.as_bytes().into());
                        }
                        Scalar::Num(n) => {
                            out.numbers.insert(n.clone());
                        }
                        Scalar::Bool(_) | Scalar::Null => {}
                    }
                }
            }
            AnythingBut::Prefix(p) => {
                out.prefixes = p.iter().map(|s| s.as_bytes().into()).collect()
            }
            AnythingBut::Suffix(p) => {
                out.suffixes = p.iter().map(|s| s.as_bytes().into()).collect()
            }
            AnythingBut::EqualsIgnoreCase(p) => {
                out.folded = p.iter().map(|s| s.as_bytes().into()).collect()
            }
            AnythingBut::Wildcard(w) => out.wildcards = w.clone(),
        }
        out
    }
}

/// Conditions on one field path.
#[derive(Debug, Default)]
struct FieldIndex {
    exact_str: StrIndex,
    exact_num: FxHashMap<NumKey, Vec<u32>>,
    exact_true: Vec<u32>,
    exact_false: Vec<u32>,
    exact_null: Vec<u32>,
    exists: Vec<u32>,
    prefix: Affix,
    suffix: Affix,
    prefix_ic: Affix,
    suffix_ic: Affix,
    equals_ic: StrIndex,
    wildcard: Vec<(Wildcard, u32)>,
    numeric: Vec<(Range, u32)>,
    cidr: Vec<(Cidr, u32)>,
    anything_but: Vec<(AnythingButIndex, u32)>,
    /// How many slots reference this field (conditions or not).
    slot_refs: u32,
}

/// A leaf value as seen while flattening an event.
#[derive(Clone, Copy)]
enum Leaf<'a> {
    Str(&'a [u8]),
    Num(&'a str),
    True,
    False,
    Null,
}

impl FieldIndex {
    fn add(&mut self, cond: &Cond, slot: u32) {
        match cond {
            Cond::Exact(Scalar::Str(s)) => self.exact_str.add(s.as_bytes(), slot),
            Cond::Exact(Scalar::Num(n)) => self.exact_num.entry(n.clone()).or_default().push(slot),
            Cond::Exact(Scalar::Bool(true)) => self.exact_true.push(slot),
            Cond::Exact(Scalar::Bool(false)) => self.exact_false.push(slot),
            Cond::Exact(Scalar::Null) => self.exact_null.push(slot),
            Cond::Prefix { text, ic: false } => self.prefix.add(text.as_bytes(), slot),
            Cond::Prefix { text, ic: true } => self.prefix_ic.add(text.as_bytes(), slot),
            Cond::Suffix { text, ic: false } => self.suffix.add(text.as_bytes(), slot),
            Cond::Suffix { text, ic: true } => self.suffix_ic.add(text.as_bytes(), slot),
            Cond::EqualsIgnoreCase(t) => self.equals_ic.add(t.as_bytes(), slot),
            Cond::Wildcard(w) => self.wildcard.push((w.clone(), slot)),
            Cond::Numeric(r) => self.numeric.push((*r, slot)),
            Cond::Cidr(c) => self.cidr.push((*c, slot)),
            Cond::Exists => self.exists.push(slot),
            Cond::AnythingBut(ab) => self.anything_but.push((AnythingButIndex::new(ab), slot)),
        }
    }

    fn remove(&mut self, cond: &Cond, slot: u32) {
        let drop_id = |v: &mut Vec<u32>| {
            if let Some(p) = v.iter().position(|&s| s == slot) {
                v.swap_remove(p);
            }
        };
        match cond {
            Cond::Exact(Scalar::Str(s)) => self.exact_str.remove(s.as_bytes(), slot),
            Cond::Exact(Scalar::Num(n)) => {
                remove_id(&mut self.exact_num, n, slot);
            }
            Cond::Exact(Scalar::Bool(true)) => drop_id(&mut self.exact_true),
            Cond::Exact(Scalar::Bool(false)) => drop_id(&mut self.exact_false),
            Cond::Exact(Scalar::Null) => drop_id(&mut self.exact_null),
            Cond::Prefix { text, ic: false } => self.prefix.remove(text.as_bytes(), slot),
            Cond::Prefix { text, ic: true } => self.prefix_ic.remove(text.as_bytes(), slot),
            Cond::Suffix { text, ic: false } => self.suffix.remove(text.as_bytes(), slot),
            Cond::Suffix { text, ic: true } => self.suffix_ic.remove(text.as_bytes(), slot),
            Cond::EqualsIgnoreCase(t) => self.equals_ic.remove(t.as_bytes(), slot),
            Cond::Wildcard(_) => remove_from_list(&mut self.wildcard, slot),
            Cond::Numeric(_) => remove_from_list(&mut self.numeric, slot),
            Cond::Cidr(_) => remove_from_list(&mut self.cidr, slot),
            Cond::Exists => drop_id(&mut self.exists),
            Cond::AnythingBut(_) => remove_from_list(&mut self.anything_but, slot),
        }
    }

    /// Emits every slot satisfied by the leaf `v` (possibly more than once).
    #[inline]
    fn lookup(&self, v: Leaf<'_>, fold: &mut Vec<u8>, mut emit: impl FnMut(u32)) {
        for &s in &self.exists {
            emit(s);
        }
        match v {
            Leaf::Str(bytes) => {
                // Empty indexes are skipped here: the lookups are not inlined.
                if !self.exact_str.is_empty() {
                    self.exact_str.lookup(bytes, &mut emit);
                }
                if !self.prefix.is_empty() {
                    self.prefix.lookup(bytes, false, &mut emit);
                }
                if !self.suffix.is_empty() {
                    self.suffix.lookup(bytes, true, &mut emit);
                }
                for (w, s) in &self.wildcard {
                    if w.matches(bytes) {
                        emit(*s);
                    }
                }
                if (!self.equals_ic.is_empty()
                    || !self.prefix_ic.is_empty()
                    || !self.suffix_ic.is_empty())
                    && fold_bytes_into(bytes, fold)
                {
                    let f = &fold[..];
                    if !self.equals_ic.is_empty() {
                        self.equals_ic.lookup(f, &mut emit);
                    }
                    if !self.prefix_ic.is_empty() {
                        self.prefix_ic.lookup(f, false, &mut emit);
                    }
                    if !self.suffix_ic.is_empty() {
                        self.suffix_ic.lookup(f, true, &mut emit);
                    }
                }
                if !self.cidr.is_empty()
                    && let Ok(text) = std::str::from_utf8(bytes)
                {
                    for (c, s) in &self.cidr {
                        if c.contains(text) {
                            emit(*s);
                        }
                    }
                }
                if !self.anything_but.is_empty() {
                    let mut folded = false;
                    for (ab, s) in &self.anything_but {
                        let excluded = ab.strings.contains(bytes)
                            || ab.prefixes.iter().any(|p| starts_with(bytes, p))
                            || ab.suffixes.iter().any(|p| ends_with(bytes, p))
                            || ab.wildcards.iter().any(|w| w.matches(bytes))
                            || (!ab.folded.is_empty() && {
                                if !folded {
                                    if !fold_bytes_into(bytes, fold) {
                                        let mut text = String::new();
                                        fold_into(&String::from_utf8_lossy(bytes), &mut text);
                                        fold.clear();
                                        fold.extend_from_slice(text.as_bytes());
                                    }
                                    folded = true;
                                }
                                ab.folded.contains(&fold[..])
                            });
                        if !excluded {
                            emit(*s);
                        }
                    }
                }
            }
            Leaf::Num(lit) => {
                let key = if !self.exact_num.is_empty()
                    || self
                        .anything_but
                        .iter()
                        .any(|(ab, _)| !ab.numbers.is_empty())
                {
                    num_key_from_literal(lit)
                } else {
                    None
                };
                if let Some(k) = &key
                    && let Some(ids) = self.exact_num.get(k)
                {
                    ids.iter().for_each(|&s| emit(s));
                }
                if !self.numeric.is_empty()
                    && let Ok(x) = lit.parse::<f64>()
                {
                    for (r, s) in &self.numeric {
                        if r.contains(x) {
                            emit(*s);
                        }
                    }
                }
                for (ab, s) in &self.anything_but {
                    let excluded = key.as_ref().is_some_and(|k| ab.numbers.contains(k));
                    if !excluded {
                        emit(*s);
                    }
                }
            }
            Leaf::True | Leaf::False | Leaf::Null => {
                let ids = match v {
                    Leaf::True => &self.exact_true,
                    Leaf::False => &self.exact_false,
                    _ => &self.exact_null,
                };
                ids.iter().for_each(|&s| emit(s));
                for (_, s) in &self.anything_but {
                    emit(*s);
                }
            }
        }
    }
}

/// Reusable per-event state. One per thread; grows to fit the matcher.
///
/// Arrays indexed by slot/branch/node/rule id hold an epoch stamp instead of
/// being cleared per event: a stamp different from the current epoch means
/// "not touched by this event".
#[derive(Debug, Default)]
pub struct Scratch {
    epoch: u32,
    slot_seen: Vec<u32>,
    /// Head of the slot's hit list in `hits`, valid when `slot_seen` is current.
    slot_head: Vec<u32>,
    /// (leaf id, next hit of the same slot).
    hits: Vec<(u32, u32)>,
    branch_seen: Vec<u32>,
    branch_count: Vec<u32>,
    candidates: Vec<u32>,
    node_seen: Vec<u32>,
    rule_seen: Vec<u32>,
    matched: Vec<u32>,
    /// Per leaf: where its array trail starts in `trails`, and its length.
    leaves: Vec<(u32, u32)>,
    /// (array id, element index) pairs, outermost first.
    trails: Vec<(u32, u32)>,
    trail_stack: Vec<(u32, u32)>,
    next_array: u32,
    fold: Vec<u8>,
    key_buf: Vec<u8>,
    str_buf: Vec<u8>,
    num_buf: Vec<u8>,
    chosen: Vec<u32>,
    check_slots: Vec<u32>,
}

impl Scratch {
    /// An empty scratch; it grows on first use.
    pub fn new() -> Self {
        Self::default()
    }

    fn begin(&mut self, m: &Matcher) {
        let grow = |v: &mut Vec<u32>, n: usize| {
            if v.len() < n {
                v.resize(n, 0);
            }
        };
        grow(&mut self.slot_seen, m.slots.len());
        grow(&mut self.slot_head, m.slots.len());
        grow(&mut self.branch_seen, m.branches.len());
        grow(&mut self.branch_count, m.branches.len());
        grow(&mut self.node_seen, m.nodes.len());
        grow(&mut self.rule_seen, m.rules.len());
        if self.epoch == u32::MAX {
            for v in [
                &mut self.slot_seen,
                &mut self.branch_seen,
                &mut self.node_seen,
                &mut self.rule_seen,
            ] {
                v.iter_mut().for_each(|x| *x = 0);
            }
            self.epoch = 0;
        }
        self.epoch += 1;
        self.hits.clear();
        self.candidates.clear();
        self.matched.clear();
        self.leaves.clear();
        self.trails.clear();
        self.trail_stack.clear();
        self.next_array = 0;
    }
}

impl Default for Matcher {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

impl Matcher {
    /// An empty matcher.
    pub fn new() -> Self {
        let mut m = Self {
            rules: Vec::new(),
            free_rules: Vec::new(),
            by_name: FxHashMap::default(),
            next_seq: 0,
            branches: Vec::new(),
            free_branches: Vec::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            nodes: Vec::new(),
            free_nodes: Vec::new(),
            node_by_path: FxHashMap::default(),
            segments: Segments::default(),
            always: Vec::new(),
        };
        m.nodes.push(PathNode::default());
        m
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether a rule with this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Adds a rule, replacing any rule with the same name. Costs
    /// O(size of the pattern) plus index updates.
    pub fn add_rule(&mut self, name: &str, pattern: &Pattern) {
        self.remove_rule(name);
        let rule_id = match self.free_rules.pop() {
            Some(id) => id,
            None => {
                self.rules.push(None);
                (self.rules.len() - 1) as u32
            }
        };
        let mut branch_ids = Vec::with_capacity(pattern.branches.len());
        for branch in &pattern.branches {
            let branch_id = match self.free_branches.pop() {
                Some(id) => id,
                None => {
                    self.branches.push(BranchEntry::default());
                    (self.branches.len() - 1) as u32
                }
            };
            let mut slot_ids = Vec::with_capacity(branch.slots.len());
            let mut required = 0;
            for slot in &branch.slots {
                let node = self.intern_path(&slot.path);
                let slot_id = match self.free_slots.pop() {
                    Some(id) => id,
                    None => {
                        self.slots.push(SlotEntry::default());
                        (self.slots.len() - 1) as u32
                    }
                };
                self.slots[slot_id as usize] = SlotEntry {
                    branch: branch_id,
                    node,
                    rule: rule_id,
                    absent_ok: slot.absent_ok,
                    solo: false,
                };
                let index = self.nodes[node as usize]
                    .index
                    .get_or_insert_with(Box::default);
                index.slot_refs += 1;
                for cond in &slot.conds {
                    index.add(cond, slot_id);
                }
                if !slot.absent_ok {
                    required += 1;
                }
                slot_ids.push(slot_id);
            }
            if let [only] = slot_ids[..]
                && required == 1
            {
                self.slots[only as usize].solo = true;
            }
            self.branches[branch_id as usize] = BranchEntry {
                rule: rule_id,
                required,
                slots: slot_ids,
            };
            if required == 0 {
                self.always.push(branch_id);
            }
            branch_ids.push(branch_id);
        }
        self.rules[rule_id as usize] = Some(RuleEntry {
            name: name.into(),
            seq: self.next_seq,
            pattern: pattern.clone(),
            branches: branch_ids,
        });
        self.next_seq += 1;
        self.by_name.insert(name.into(), rule_id);
    }

    /// Removes a rule; returns whether it existed.
    pub fn remove_rule(&mut self, name: &str) -> bool {
        let Some(rule_id) = self.by_name.remove(name) else {
            return false;
        };
        let Some(rule) = self.rules[rule_id as usize].take() else {
            return false;
        };
        for (branch, &branch_id) in rule.pattern.branches.iter().zip(&rule.branches) {
            let entry = std::mem::take(&mut self.branches[branch_id as usize]);
            for (slot, &slot_id) in branch.slots.iter().zip(&entry.slots) {
                let node = self.slots[slot_id as usize].node;
                if let Some(index) = self.nodes[node as usize].index.as_mut() {
                    for cond in &slot.conds {
                        index.remove(cond, slot_id);
                    }
                    index.slot_refs -= 1;
                    if index.slot_refs == 0 {
                        self.nodes[node as usize].index = None;
                    }
                }
                self.release_path(&slot.path);
                self.free_slots.push(slot_id);
            }
            if entry.required == 0
                && let Some(p) = self.always.iter().position(|&b| b == branch_id)
            {
                self.always.swap_remove(p);
            }
            self.free_branches.push(branch_id);
        }
        self.free_rules.push(rule_id);
        true
    }

    /// Boundary prefixes of a dotted path: `a.b.c` → `["a", "a.b", "a.b.c"]`.
    fn boundaries(path: &str) -> Vec<&str> {
        let mut out: Vec<&str> = path.match_indices('.').map(|(i, _)| &path[..i]).collect();
        out.push(path);
        out
    }

    fn intern_path(&mut self, path: &str) -> u32 {
        let bounds = Self::boundaries(path);
        let mut ids = Vec::with_capacity(bounds.len() + 1);
        ids.push(0u32);
        for b in &bounds {
            let id = match self.node_by_path.get(*b) {
                Some(&id) => id,
                None => {
                    let id = match self.free_nodes.pop() {
                        Some(id) => id,
                        None => {
                            self.nodes.push(PathNode::default());
                            (self.nodes.len() - 1) as u32
                        }
                    };
                    self.nodes[id as usize] = PathNode::default();
                    self.node_by_path.insert((*b).into(), id);
                    id
                }
            };
            self.nodes[id as usize].refs += 1;
            ids.push(id);
        }
        // Edges only join consecutive boundaries and carry one segment (no
        // dot); an event key with dots is walked segment by segment
        // (`Matcher::child`). Edges for every dotted spelling would be
        // quadratic in the path length.
        let segments: Vec<&str> = path.split('.').collect();
        for (k, segment) in segments.iter().enumerate() {
            self.segments.add(segment.as_bytes());
            let to = ids[k + 1];
            self.nodes[ids[k] as usize].add_edge(segment.as_bytes(), to);
            if k > 0 {
                self.nodes[ids[k - 1] as usize].deep = true;
            }
        }
        ids[ids.len() - 1]
    }

    /// A position at or before the first string from `from` on that could
    /// be an event key reaching some path node, or `b.len()` if there is
    /// none. A key reaches a node only through an edge, so its first
    /// dot-separated segment is one rules mention. Every quote is tried as
    /// the start of such a key (pairing them into strings would cost a
    /// scan of each), so a value, or the bytes after a closing quote,
    /// spelling a segment only makes the answer earlier; so does any
    /// backslash, since an escaped key could spell one.
    fn first_key_ahead(&self, b: &[u8], from: usize) -> usize {
        if self.segments.has_empty() {
            return from;
        }
        first_quote_where(b, from, |at| self.segments.starts_at(b, at))
    }

    /// The node reached from `node` by event key `key`: one edge, or when
    /// the key holds dots, one edge per dot-separated segment.
    #[inline(always)]
    fn child(&self, node: u32, key: &[u8]) -> Option<u32> {
        let head = pack8(key);
        let n = &self.nodes[node as usize];
        if let Some(c) = n.child_packed(key, head) {
            return Some(c);
        }
        if !n.deep {
            return None;
        }
        // Most keys miss and hold no dot; for keys of up to 8 bytes the
        // packed head answers that without a byte scan (the zero padding
        // is not a dot). Measured: the scan was a quarter of this function.
        let dotless = if key.len() <= 8 {
            let x = head ^ 0x2E2E_2E2E_2E2E_2E2E;
            x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 == 0
        } else {
            !key.contains(&b'.')
        };
        if dotless {
            return None;
        }
        self.child_dotted(node, key)
    }

    #[cold]
    fn child_dotted(&self, node: u32, key: &[u8]) -> Option<u32> {
        let mut at = node;
        for segment in key.split(|&b| b == b'.') {
            at = self.nodes[at as usize].child(segment)?;
        }
        Some(at)
    }

    fn release_path(&mut self, path: &str) {
        for segment in path.split('.') {
            self.segments.remove(segment.as_bytes());
        }
        let bounds = Self::boundaries(path);
        let ids: Vec<u32> = std::iter::once(0)
            .chain(
                bounds
                    .iter()
                    .filter_map(|b| self.node_by_path.get(*b).copied()),
            )
            .collect();
        for (k, b) in bounds.iter().enumerate() {
            let Some(&id) = ids.get(k + 1) else { continue };
            let node = &mut self.nodes[id as usize];
            node.refs -= 1;
            if node.refs == 0 {
                let parent = ids[k];
                self.nodes[parent as usize].remove_edges_to(id);
                self.nodes[id as usize] = PathNode::default();
                self.node_by_path.remove(*b);
                self.free_nodes.push(id);
            }
        }
    }

    /// Names of the rules matching a JSON event given as bytes, in the order
    /// the rules were added (a replaced rule counts as newly added).
    pub fn matches_json(&self, event: &[u8]) -> Result<Vec<&str>, EventError> {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => self.matches_json_with(event, &mut s),
            Err(_) => self.matches_json_with(event, &mut Scratch::new()),
        })
    }

    /// Names of the rules matching an already parsed event. A value that is
    /// not an object matches nothing.
    pub fn matches_value(&self, event: &Value) -> Vec<&str> {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => self.matches_value_with(event, &mut s),
            Err(_) => self.matches_value_with(event, &mut Scratch::new()),
        })
    }

    /// [`Matcher::matches_json`] with caller-provided scratch space.
    pub fn matches_json_with(
        &self,
        event: &[u8],
        scratch: &mut Scratch,
    ) -> Result<Vec<&str>, EventError> {
        self.run_json(event, scratch)?;
        Ok(self.names(scratch))
    }

    /// [`Matcher::matches_value`] with caller-provided scratch space.
    pub fn matches_value_with(&self, event: &Value, scratch: &mut Scratch) -> Vec<&str> {
        self.run_value(event, scratch);
        self.names(scratch)
    }

    /// Matches and calls `f` with the id of each matching rule, unordered;
    /// ids are stable while the rule exists. Used by benchmarks and counters
    /// to avoid building a `Vec` of names.
    pub fn for_each_match_json(
        &self,
        event: &[u8],
        scratch: &mut Scratch,
        mut f: impl FnMut(usize, &str),
    ) -> Result<(), EventError> {
        self.run_json(event, scratch)?;
        for &r in &scratch.matched {
            if let Some(rule) = &self.rules[r as usize] {
                f(r as usize, &rule.name);
            }
        }
        Ok(())
    }

    fn names(&self, scratch: &mut Scratch) -> Vec<&str> {
        let mut found: Vec<&RuleEntry> = scratch
            .matched
            .iter()
            .filter_map(|&r| self.rules[r as usize].as_ref())
            .collect();
        found.sort_unstable_by_key(|r| r.seq);
        found.into_iter().map(|r| &*r.name).collect()
    }

    fn run_json(&self, event: &[u8], scratch: &mut Scratch) -> Result<(), EventError> {
        scratch.begin(self);
        let mut c = Cursor::new(event);
        c.ws();
        if c.peek() != Some(b'{') {
            // Distinguish "valid JSON, wrong type" from garbage.
            return match serde_json::from_slice::<serde::de::IgnoredAny>(event) {
                Ok(_) => Err(EventError::NotAnObject),
                Err(_) => Err(c.err("expected a JSON object")),
            };
        }
        let mut w = JsonWalk::new(self, scratch);
        w.object(&mut c, 0, 0)?;
        c.ws();
        if c.i != event.len() && !w.stopped {
            return Err(c.err("trailing characters after the event"));
        }
        self.finish(scratch);
        Ok(())
    }

    fn run_value(&self, event: &Value, scratch: &mut Scratch) {
        scratch.begin(self);
        if let Value::Object(map) = event {
            let mut w = JsonWalk::new(self, scratch);
            for (k, v) in map {
                if let Some(child) = self.child(0, k.as_bytes()) {
                    w.value_tree(child, v);
                }
            }
            self.finish(scratch);
        }
    }

    fn finish(&self, s: &mut Scratch) {
        let epoch = s.epoch;
        let mut candidates = std::mem::take(&mut s.candidates);
        candidates.extend_from_slice(&self.always);
        for &b in &candidates {
            let branch = &self.branches[b as usize];
            if s.rule_seen[branch.rule as usize] == epoch {
                continue;
            }
            if self.branch_holds(branch, s) {
                s.rule_seen[branch.rule as usize] = epoch;
                s.matched.push(branch.rule);
            }
        }
        candidates.clear();
        s.candidates = candidates;
    }

    fn branch_holds(&self, branch: &BranchEntry, s: &mut Scratch) -> bool {
        let epoch = s.epoch;
        s.check_slots.clear();
        let mut any_trail = false;
        for &slot_id in &branch.slots {
            let slot = &self.slots[slot_id as usize];
            let hit = s.slot_seen[slot_id as usize] == epoch;
            if !hit {
                if !slot.absent_ok || s.node_seen[slot.node as usize] == epoch {
                    return false;
                }
                continue;
            }
            s.check_slots.push(slot_id);
            let mut h = s.slot_head[slot_id as usize];
            while h != NONE {
                let (leaf, next) = s.hits[h as usize];
                if s.leaves[leaf as usize].1 != 0 {
                    any_trail = true;
                    break;
                }
                h = next;
            }
        }
        if !any_trail || s.check_slots.len() < 2 {
            return true;
        }
        s.chosen.clear();
        consistent(s, 0)
    }
}

/// Whether one hit per slot in `check_slots[k..]` can be chosen so that no
/// two chosen leaves sit in different elements of the same array.
fn consistent(s: &mut Scratch, k: usize) -> bool {
    if k == s.check_slots.len() {
        return true;
    }
    let mut h = s.slot_head[s.check_slots[k] as usize];
    while h != NONE {
        let (leaf, next) = s.hits[h as usize];
        let ok = s.chosen.iter().all(|&other| compatible(s, leaf, other));
        if ok {
            s.chosen.push(leaf);
            if consistent(s, k + 1) {
                return true;
            }
            s.chosen.pop();
        }
        h = next;
    }
    false
}

fn compatible(s: &Scratch, a: u32, b: u32) -> bool {
    let (sa, la) = s.leaves[a as usize];
    let (sb, lb) = s.leaves[b as usize];
    let ta = &s.trails[sa as usize..(sa + la) as usize];
    let tb = &s.trails[sb as usize..(sb + lb) as usize];
    for (x, y) in ta.iter().zip(tb) {
        if x.0 != y.0 {
            // Paths diverged before reaching a common array.
            return true;
        }
        if x.1 != y.1 {
            return false;
        }
    }
    true
}

struct JsonWalk<'m, 's> {
    m: &'m Matcher,
    s: &'s mut Scratch,
    /// Set when the rest of the event was found to hold no key any rule
    /// mentions: every enclosing object returns at once, unread.
    stopped: bool,
    /// `Matcher::first_key_ahead` from `scan_from` answered `key_at`; a
    /// later question from a position in between has the same answer, so
    /// each byte of the event is scanned at most once.
    scan_from: usize,
    key_at: usize,
}

impl<'m, 's> JsonWalk<'m, 's> {
    fn new(m: &'m Matcher, s: &'s mut Scratch) -> Self {
        Self {
            m,
            s,
            stopped: false,
            scan_from: usize::MAX,
            key_at: 0,
        }
    }

    /// Whether nothing from the cursor to the end of the event can reach a
    /// path node, so the walk may stop here. Only asked outside arrays: an
    /// enclosing array's later elements may be bare leaves, which no key
    /// announces.
    fn nothing_ahead(&mut self, c: &Cursor<'_>) -> bool {
        if !(self.scan_from <= c.i && c.i <= self.key_at) {
            self.scan_from = c.i;
            self.key_at = self.m.first_key_ahead(c.b, c.i);
        }
        self.key_at == c.b.len()
    }

    /// Records a leaf at `node` and runs it through the node's index.
    #[inline]
    fn leaf(&mut self, node: u32, v: Leaf<'_>) {
        let Some(index) = self.m.nodes[node as usize].index.as_deref() else {
            return;
        };
        let s = &mut *self.s;
        let epoch = s.epoch;
        s.node_seen[node as usize] = epoch;
        let leaf_id = s.leaves.len() as u32;
        let trail_start = s.trails.len() as u32;
        if !s.trail_stack.is_empty() {
            s.trails.extend_from_slice(&s.trail_stack);
        }
        s.leaves.push((trail_start, s.trail_stack.len() as u32));
        let mut fold = std::mem::take(&mut s.fold);
        let slots = &self.m.slots;
        let branches = &self.m.branches;
        index.lookup(v, &mut fold, |slot_id| {
            let si = slot_id as usize;
            let slot = slots[si];
            if slot.solo {
                let r = slot.rule as usize;
                if s.rule_seen[r] != epoch {
                    s.rule_seen[r] = epoch;
                    s.matched.push(slot.rule);
                }
                return;
            }
            if s.slot_seen[si] != epoch {
                s.slot_seen[si] = epoch;
                s.slot_head[si] = NONE;
                if !slot.absent_ok {
                    let b = slot.branch as usize;
                    if s.branch_seen[b] != epoch {
                        s.branch_seen[b] = epoch;
                        s.branch_count[b] = 0;
                    }
                    s.branch_count[b] += 1;
                    if s.branch_count[b] == branches[b].required {
                        s.candidates.push(slot.branch);
                    }
                }
            } else {
                let head = s.slot_head[si];
                if head != NONE && s.hits[head as usize].0 == leaf_id {
                    return;
                }
            }
            s.hits.push((leaf_id, s.slot_head[si]));
            s.slot_head[si] = (s.hits.len() - 1) as u32;
        });
        s.fold = fold;
    }

    fn object(&mut self, c: &mut Cursor<'_>, node: u32, depth: usize) -> Result<(), EventError> {
        if depth > MAX_EVENT_DEPTH {
            return Err(EventError::TooDeep(MAX_EVENT_DEPTH));
        }
        // At '{'.
        c.i += 1;
        c.ws();
        if c.peek() == Some(b'}') {
            c.i += 1;
            return Ok(());
        }
        loop {
            c.ws();
            if c.peek() != Some(b'"') {
                return Err(c.err("expected an object key"));
            }
            let (ks, ke, escaped) = c.string_span()?;
            let child = if escaped {
                let mut buf = std::mem::take(&mut self.s.key_buf);
                unescape(&c.b[ks..ke], &mut buf).map_err(|r| EventError::InvalidJson {
                    offset: ks,
                    reason: r,
                })?;
                let child = self.m.child(node, &buf);
                self.s.key_buf = buf;
                child
            } else {
                self.m.child(node, &c.b[ks..ke])
            };
            c.expect(b':', "expected ':'")?;
            c.ws();
            match child {
                Some(child) => {
                    self.value(c, child, depth + 1)?;
                    if self.stopped {
                        return Ok(());
                    }
                }
                // Skipping a container costs a scan of all of it; when no
                // key ahead can matter (GeoJSON coordinates after the last
                // mentioned property, say), a search for quotes ends the
                // walk for less. Duplicate and dotted keys ahead are still
                // seen: they would be found by that search.
                None if matches!(c.peek(), Some(b'{' | b'['))
                    && self.s.trail_stack.is_empty()
                    && self.nothing_ahead(c) =>
                {
                    c.i = c.b.len();
                    self.stopped = true;
                    return Ok(());
                }
                None => c.skip_value()?,
            }
            c.ws();
            match c.peek() {
                Some(b',') => c.i += 1,
                Some(b'}') => {
                    c.i += 1;
                    return Ok(());
                }
                _ => return Err(c.err("expected ',' or '}'")),
            }
        }
    }

    fn value(&mut self, c: &mut Cursor<'_>, node: u32, depth: usize) -> Result<(), EventError> {
        let n = &self.m.nodes[node as usize];
        match c.peek() {
            Some(b'{') => {
                if n.has_children() {
                    self.object(c, node, depth)
                } else {
                    c.skip_value()
                }
            }
            Some(b'[') => {
                if n.index.is_none() && !n.has_children() {
                    return c.skip_value();
                }
                self.array(c, node, depth)
            }
            _ if n.index.is_none() => c.skip_value(),
            Some(b'"') => {
                let (s, e, escaped) = c.string_span()?;
                if escaped {
                    let mut buf = std::mem::take(&mut self.s.str_buf);
                    unescape(&c.b[s..e], &mut buf).map_err(|r| EventError::InvalidJson {
                        offset: s,
                        reason: r,
                    })?;
                    self.leaf(node, Leaf::Str(&buf));
                    self.s.str_buf = buf;
                } else {
                    self.leaf(node, Leaf::Str(&c.b[s..e]));
                }
                Ok(())
            }
            Some(b't' | b'f' | b'n') => {
                let v = match c.literal()? {
                    Literal::True => Leaf::True,
                    Literal::False => Leaf::False,
                    Literal::Null => Leaf::Null,
                };
                self.leaf(node, v);
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => {
                let lit = c.number()?;
                self.leaf(node, Leaf::Num(lit));
                Ok(())
            }
            Some(_) => Err(c.err("unexpected character")),
            None => Err(c.err("unexpected end of input")),
        }
    }

    fn array(&mut self, c: &mut Cursor<'_>, node: u32, depth: usize) -> Result<(), EventError> {
        if depth > MAX_EVENT_DEPTH {
            return Err(EventError::TooDeep(MAX_EVENT_DEPTH));
        }
        c.i += 1;
        c.ws();
        if c.peek() == Some(b']') {
            c.i += 1;
            return Ok(());
        }
        let id = self.s.next_array;
        self.s.next_array += 1;
        let mut idx = 0u32;
        loop {
            c.ws();
            self.s.trail_stack.push((id, idx));
            let r = self.value(c, node, depth + 1);
            self.s.trail_stack.pop();
            r?;
            c.ws();
            match c.peek() {
                Some(b',') => {
                    c.i += 1;
                    idx += 1;
                }
                Some(b']') => {
                    c.i += 1;
                    return Ok(());
                }
                _ => return Err(c.err("expected ',' or ']'")),
            }
        }
    }

    fn value_tree(&mut self, node: u32, v: &Value) {
        let n = &self.m.nodes[node as usize];
        match v {
            Value::Object(map) => {
                if n.has_children() {
                    for (k, v) in map {
                        if let Some(child) = self.m.child(node, k.as_bytes()) {
                            self.value_tree(child, v);
                        }
                    }
                }
            }
            Value::Array(items) => {
                if items.is_empty() {
                    return;
                }
                let id = self.s.next_array;
                self.s.next_array += 1;
                for (idx, item) in items.iter().enumerate() {
                    self.s.trail_stack.push((id, idx as u32));
                    self.value_tree(node, item);
                    self.s.trail_stack.pop();
                }
            }
            Value::String(s) => self.leaf(node, Leaf::Str(s.as_bytes())),
            Value::Number(num) => {
                let mut buf = std::mem::take(&mut self.s.num_buf);
                buf.clear();
                write_number_literal(num, &mut buf);
                if let Ok(lit) = std::str::from_utf8(&buf) {
                    self.leaf(node, Leaf::Num(lit));
                }
                self.s.num_buf = buf;
            }
            Value::Bool(true) => self.leaf(node, Leaf::True),
            Value::Bool(false) => self.leaf(node, Leaf::False),
            Value::Null => self.leaf(node, Leaf::Null),
        }
    }
}

impl Pattern {
    /// Whether this single pattern matches a JSON event (bytes).
    pub fn matches_json(&self, event: &[u8]) -> Result<bool, EventError> {
        let mut m = Matcher::new();
        m.add_rule("", self);
        Ok(!m.matches_json_with(event, &mut Scratch::new())?.is_empty())
    }

    /// Whether this single pattern matches an already parsed event.
    pub fn matches_value(&self, event: &Value) -> bool {
        let mut m = Matcher::new();
        m.add_rule("", self);
        !m.matches_value_with(event, &mut Scratch::new()).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: [&str; 14] = [
        "",
        "a",
        "ab",
        "abc",
        "abcd",
        "abcde",
        "abcdef",
        "abcdefg",
        "abcdefgh",
        "abcdefghi",
        "abcdefghij",
        "b",
        "MAPBLKLOT",
        "MAPBLKLOX",
    ];

    #[test]
    fn pack8_is_injective_per_length() {
        for a in WORDS {
            for b in WORDS {
                let (a, b) = (a.as_bytes(), b.as_bytes());
                if a.len() == b.len() && a.len() <= 8 {
                    assert_eq!(pack8(a) == pack8(b), a == b);
                }
                assert_eq!(
                    short_key(a).is_some() && short_key(a) == short_key(b),
                    a == b && a.len() < 8
                );
            }
        }
        assert_eq!(pack8(b"abcdefghij"), pack8(b"abcdefgh"));
    }

    /// Hashed lookups (more operands than the linear limit) agree with a
    /// plain scan, including after removals.
    type Emit<'a> = &'a mut dyn FnMut(u32);

    #[test]
    fn indexes_agree_with_scan() {
        let mut pre = Affix::default();
        let mut suf = Affix::default();
        let mut eq = StrIndex::default();
        let mut ops: Vec<(&str, u32)> = Vec::new();
        for (i, w) in WORDS.iter().enumerate() {
            for (j, t) in [*w, &w[w.len() / 2..]].into_iter().enumerate() {
                let slot = (i * 2 + j) as u32;
                pre.add(t.as_bytes(), slot);
                suf.add(t.as_bytes(), slot);
                eq.add(t.as_bytes(), slot);
                ops.push((t, slot));
            }
        }
        let values = [
            "",
            "a",
            "abcdefghijk",
            "xabcdefgh",
            "hij",
            "MAPBLKLOT",
            "ab",
            "zz",
        ];
        let check = |pre: &Affix, suf: &Affix, eq: &StrIndex, ops: &[(&str, u32)]| {
            for v in values {
                let collect = |f: &dyn Fn(Emit<'_>)| {
                    let mut got = Vec::new();
                    f(&mut |s| got.push(s));
                    got.sort_unstable();
                    got
                };
                let want = |p: &dyn Fn(&str) -> bool| {
                    let mut w: Vec<u32> = ops.iter().filter(|(t, _)| p(t)).map(|o| o.1).collect();
                    w.sort_unstable();
                    w
                };
                let vb = v.as_bytes();
                assert_eq!(
                    collect(&|e| pre.lookup(vb, false, e)),
                    want(&|t| v.starts_with(t)),
                    "{v}"
                );
                assert_eq!(
                    collect(&|e| suf.lookup(vb, true, e)),
                    want(&|t| v.ends_with(t)),
                    "{v}"
                );
                assert_eq!(collect(&|e| eq.lookup(vb, e)), want(&|t| v == t), "{v}");
            }
        };
        check(&pre, &suf, &eq, &ops);
        for k in (0..ops.len()).step_by(3).rev() {
            let (t, slot) = ops.remove(k);
            pre.remove(t.as_bytes(), slot);
            suf.remove(t.as_bytes(), slot);
            eq.remove(t.as_bytes(), slot);
        }
        check(&pre, &suf, &eq, &ops);
    }

    #[test]
    fn edges_by_packed_head() {
        let mut n = PathNode::default();
        for (i, k) in ["MAPBLKLOT", "MAPBLKLOX", "STREET", "", "ST_TYPE"]
            .iter()
            .enumerate()
        {
            n.add_edge(k.as_bytes(), i as u32);
        }
        for (i, k) in ["MAPBLKLOT", "MAPBLKLOX", "STREET", "", "ST_TYPE"]
            .iter()
            .enumerate()
        {
            assert_eq!(n.child(k.as_bytes()), Some(i as u32), "{k}");
        }
        for k in ["MAPBLKLOY", "STREE", "STREETS", "st_type"] {
            assert_eq!(n.child(k.as_bytes()), None, "{k}");
        }
        n.remove_edges_to(0);
        assert_eq!(n.child(b"MAPBLKLOT"), None);
        assert_eq!(n.child(b"MAPBLKLOX"), Some(1));
    }
}
