//! Dependencies met by name or by versioned provides, the rule pacman
//! and apk share (`glibc>=2.38`, `so:libz.so.1`, `sh`): the package of
//! that name if its version allows, then every package that provides the
//! name, a versioned dependency only through a versioned provide.  Each
//! backend brings its own version order and operator spellings.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use crate::package::Package;

/// A version order (libalpm's, apk's).
pub type VersionOrder = fn(&str, &str) -> Ordering;

/// `<`, `<=`, `=`, `>=`, `>`, and apk's `~` (the version starts with the
/// given one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Less,
    LessEqual,
    Equal,
    GreaterEqual,
    Greater,
    Fuzzy,
}

/// One dependency: `name`, or `name` and a constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub constraint: Option<(Op, String)>,
}

impl Dep {
    /// `name[OP version]` with the spellings `ops` (longest first),
    /// names and versions checked by the backend's rules.
    pub fn parse(
        text: &str,
        ops: &[(&str, Op)],
        is_name: fn(&str) -> bool,
        is_version: fn(&str) -> bool,
    ) -> Option<Dep> {
        let first_op = ops.iter().filter_map(|(s, _)| text.find(s)).min();
        let Some(at) = first_op else {
            return is_name(text).then(|| Dep {
                name: text.to_string(),
                constraint: None,
            });
        };
        let (name, rest) = text.split_at(at);
        let (op, version) = ops
            .iter()
            .find_map(|(s, op)| rest.strip_prefix(s).map(|v| (*op, v)))?;
        (is_name(name) && is_version(version)).then(|| Dep {
            name: name.to_string(),
            constraint: Some((op, version.to_string())),
        })
    }

    /// Does `version` (of a package or a versioned provide) satisfy it?
    pub fn allows(&self, version: &str, order: VersionOrder) -> bool {
        let Some((op, want)) = &self.constraint else {
            return true;
        };
        let ord = order(version, want);
        match op {
            Op::Less => ord.is_lt(),
            Op::LessEqual => ord.is_le(),
            Op::Equal => ord.is_eq(),
            Op::GreaterEqual => ord.is_ge(),
            Op::Greater => ord.is_gt(),
            Op::Fuzzy => ord.is_eq() || version.starts_with(want.as_str()),
        }
    }

    /// As a provide: the name and its version, if any (`name=version`
    /// only).
    pub fn into_provide(self) -> Option<(String, Option<String>)> {
        match self.constraint {
            None => Some((self.name, None)),
            Some((Op::Equal, v)) => Some((self.name, Some(v))),
            Some(_) => None,
        }
    }
}

/// What the rule needs of one installed package.
pub struct Entry<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub provides: &'a [(String, Option<String>)],
}

/// Packages by name and by what they provide.
#[derive(Debug, Default)]
pub struct Index {
    by_name: HashMap<String, usize>,
    providers: HashMap<String, Vec<usize>>,
}

impl Index {
    /// The index of `entries` (by position); `Err` names a package
    /// installed twice.
    pub fn new<'a>(entries: impl Iterator<Item = Entry<'a>>) -> Result<Index, String> {
        let mut index = Index::default();
        for (i, e) in entries.enumerate() {
            if index.by_name.insert(e.name.to_string(), i).is_some() {
                return Err(e.name.to_string());
            }
            for (name, _) in e.provides {
                index.providers.entry(name.clone()).or_default().push(i);
            }
        }
        Ok(index)
    }

    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The packages that satisfy `dep`, best first: the one of that name,
    /// then its providers in database order.
    pub fn candidates<'a>(
        &self,
        dep: &Dep,
        entry: impl Fn(usize) -> Entry<'a>,
        order: VersionOrder,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        if let Some(&i) = self.by_name.get(&dep.name) {
            if dep.allows(entry(i).version, order) {
                out.push(i);
                seen.insert(i);
            }
        }
        for &i in self.providers.get(&dep.name).into_iter().flatten() {
            let satisfies = entry(i)
                .provides
                .iter()
                .filter(|(name, _)| *name == dep.name)
                .any(|(_, version)| match (version, &dep.constraint) {
                    (_, None) => true,
                    (Some(v), Some(_)) => dep.allows(v, order),
                    (None, Some(_)) => false,
                });
            if satisfies && seen.insert(i) {
                out.push(i);
            }
        }
        out
    }
}

/// A package as upstream supermin names pacman's and apk's:
/// `name-version.arch`.
pub fn package(name: &str, version: &str, arch: &str, depends: Vec<String>) -> Package {
    Package {
        full_name: format!("{name}-{version}.{arch}"),
        name: name.to_string(),
        version: version.to_string(),
        arch: arch.to_string(),
        depends,
        license: None,
        supplier: None,
        id: None,
    }
}

/// Several licence lines as one SPDX-style expression (`GPL-2.0-only AND MIT`).
pub fn licenses<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let all: Vec<&str> = values.map(str::trim).filter(|v| !v.is_empty()).collect();
    (!all.is_empty()).then(|| all.join(" AND "))
}
