//! Dependency closure, independent of the package manager.
//!
//! A backend describes each package's requirements as clauses of
//! alternatives, each alternative a list of candidate packages in the
//! backend's order of preference.  The closure is then the same for all
//! backends: breadth-first from the inputs, and for each clause
//! - if some candidate of any alternative is already chosen, the clause is
//!   satisfied (so `a | b` never drags in `a` when `b` is already there);
//! - otherwise, with one candidate, that one; with several (providers of a
//!   virtual package, installed alternatives), the one the backend prefers
//!   (`Essential`, `Priority: required`), then the one that adds the fewest
//!   packages, then the first in the clause's order.  So `awk` is mawk
//!   (required, adds nothing) and not gawk (optional, adds 11), whichever
//!   the database lists first.
//!
//! Inputs are processed in the order given and clauses in database order,
//! so the result is deterministic.

use std::collections::{BTreeSet, VecDeque};

/// One dependency clause: `a | b (>= 2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// The clause as written, for messages.
    pub text: String,
    /// Candidate package ids per alternative, best first.
    pub alternatives: Vec<Vec<usize>>,
}

/// A package database seen as a graph.
pub trait Graph {
    fn clauses(&self, id: usize) -> Vec<Clause>;

    /// Why package `id` is preferred when several satisfy a clause
    /// (`"required"`), if it is.
    fn preference(&self, _id: usize) -> Option<&'static str> {
        None
    }
}

/// A clause several installed packages satisfied, and the one taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The package whose clause it is, and the clause as written.
    pub from: usize,
    pub clause: String,
    /// `(package id, packages it would add)`, the chosen one first.
    pub candidates: Vec<(usize, usize)>,
}

/// An added count for messages (`?` past [`MAX_COUNTED`]).
fn counted(added: usize) -> String {
    if added == usize::MAX {
        "?".into()
    } else {
        added.to_string()
    }
}

/// Candidates of one clause whose additions are counted.
const MAX_COUNTED: usize = 16;

/// How many packages not in `chosen` taking `id` would add besides
/// itself, following each clause's first candidate (a cheap, fixed
/// estimate: good enough to rank, never used to build).
fn added_by(graph: &dyn Graph, id: usize, chosen: &BTreeSet<usize>) -> usize {
    let mut seen: BTreeSet<usize> = BTreeSet::new();
    let mut queue = VecDeque::from([id]);
    while let Some(next) = queue.pop_front() {
        if chosen.contains(&next) || !seen.insert(next) {
            continue;
        }
        for clause in graph.clauses(next) {
            let all: Vec<usize> = clause.alternatives.iter().flatten().copied().collect();
            if all.iter().any(|c| chosen.contains(c) || seen.contains(c)) {
                continue;
            }
            if let Some(&first) = all.first() {
                queue.push_back(first);
            }
        }
    }
    seen.len().saturating_sub(1)
}

/// What [`closure`] found.
#[derive(Debug, Clone, Default)]
pub struct Closure {
    /// Package ids, sorted.
    pub ids: Vec<usize>,
    /// Clauses that no installed package satisfies: `(package id, text)`.
    pub unresolved: Vec<(usize, String)>,
    /// Clauses with several candidates, and which was taken.
    pub choices: Vec<Choice>,
    /// Why each package that was not a root is in: `(id, from, clause)`,
    /// the first package whose clause took it.
    pub reasons: Vec<(usize, usize, String)>,
}

/// Why a package is in a closure: named, or taken for another package's
/// dependency clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    Named,
    Needed { by: String, clause: String },
}

/// The closure of `roots`.
pub fn closure(graph: &dyn Graph, roots: &[usize]) -> Closure {
    let mut chosen: BTreeSet<usize> = BTreeSet::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    for &r in roots {
        if chosen.insert(r) {
            queue.push_back(r);
        }
    }
    let mut unresolved = Vec::new();
    let mut choices = Vec::new();
    let mut reasons = Vec::new();
    while let Some(id) = queue.pop_front() {
        for clause in graph.clauses(id) {
            let satisfied = clause
                .alternatives
                .iter()
                .flatten()
                .any(|c| chosen.contains(c));
            if satisfied {
                continue;
            }
            let mut candidates: Vec<usize> = Vec::new();
            for &c in clause.alternatives.iter().flatten() {
                if !candidates.contains(&c) {
                    candidates.push(c);
                }
            }
            let pick = match candidates.as_slice() {
                [] => {
                    unresolved.push((id, clause.text));
                    continue;
                }
                [only] => *only,
                several => {
                    // Counting is a walk per candidate: a database where
                    // thousands provide one name (a hostile one) must not
                    // cost thousands of walks per clause.  Past the first
                    // few, candidates rank by preference and order alone.
                    let mut ranked: Vec<(usize, usize, usize)> = several
                        .iter()
                        .enumerate()
                        .map(|(order, &c)| {
                            let added = if order < MAX_COUNTED {
                                added_by(graph, c, &chosen)
                            } else {
                                usize::MAX
                            };
                            (c, added, order)
                        })
                        .collect();
                    ranked.sort_by_key(|&(c, added, order)| {
                        (graph.preference(c).is_none(), added, order)
                    });
                    choices.push(Choice {
                        from: id,
                        clause: clause.text.clone(),
                        candidates: ranked.iter().map(|&(c, added, _)| (c, added)).collect(),
                    });
                    ranked[0].0
                }
            };
            chosen.insert(pick);
            queue.push_back(pick);
            reasons.push((pick, id, clause.text));
        }
    }
    Closure {
        ids: chosen.into_iter().collect(),
        unresolved,
        choices,
        reasons,
    }
}

/// The closure of the packages with ids `roots` as packages sorted by
/// name then arch, for a backend whose package with id `i` is `package(i)`.  Requirements that
/// nothing installed satisfies are reported at `-v`, never fatal (upstream
/// ignores them silently).
pub fn closure_packages<'a>(
    graph: &dyn Graph,
    roots: &[usize],
    package: impl Fn(usize) -> &'a crate::package::Package,
    backend: &str,
    reporter: &crate::report::Reporter,
) -> Vec<(crate::package::Package, Why)> {
    let found = closure(graph, roots);
    for (id, text) in found.unresolved {
        reporter.info(1, || {
            format!(
                "{backend}: {}: '{text}' is not satisfied by any installed package",
                package(id).name
            )
        });
    }
    for choice in &found.choices {
        reporter.info(1, || {
            let (chosen, adds) = choice.candidates[0];
            let adds = counted(adds);
            let others: Vec<&(usize, usize)> = choice.candidates[1..].iter().collect();
            let why = graph
                .preference(chosen)
                .map(|p| format!("{p}; "))
                .unwrap_or_default();
            format!(
                "{backend}: {}: '{}': {} chosen over {} ({why}adds {adds} packages against {})",
                package(choice.from).name,
                choice.clause,
                package(chosen).name,
                others
                    .iter()
                    .map(|(c, _)| package(*c).name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                others
                    .iter()
                    .map(|(_, a)| counted(*a))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    let mut why: std::collections::HashMap<usize, Why> = found
        .reasons
        .into_iter()
        .map(|(id, from, clause)| {
            let by = package(from).name.clone();
            (id, Why::Needed { by, clause })
        })
        .collect();
    let mut out: Vec<(crate::package::Package, Why)> = found
        .ids
        .into_iter()
        .map(|i| (package(i).clone(), why.remove(&i).unwrap_or(Why::Named)))
        .collect();
    out.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name).then(a.arch.cmp(&b.arch)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<Vec<Clause>>);
    impl Graph for Fixed {
        fn clauses(&self, id: usize) -> Vec<Clause> {
            self.0[id].clone()
        }
    }
    fn clause(alts: &[&[usize]]) -> Clause {
        Clause {
            text: format!("{alts:?}"),
            alternatives: alts.iter().map(|a| a.to_vec()).collect(),
        }
    }

    #[test]
    fn includes_inputs_and_follows_chains() {
        let g = Fixed(vec![
            vec![clause(&[&[1]])],
            vec![clause(&[&[2]])],
            vec![],
            vec![],
        ]);
        assert_eq!(closure(&g, &[0]).ids, vec![0, 1, 2]);
    }

    #[test]
    fn alternative_already_chosen_wins() {
        // 0 needs (1 | 2); 2 is an input too, so 1 must not be pulled in.
        let g = Fixed(vec![vec![clause(&[&[1], &[2]])], vec![], vec![]]);
        assert_eq!(closure(&g, &[2, 0]).ids, vec![0, 2]);
        assert_eq!(closure(&g, &[0]).ids, vec![0, 1]);
    }

    #[test]
    fn first_installed_alternative_is_used() {
        let g = Fixed(vec![vec![clause(&[&[], &[2]])], vec![], vec![]]);
        assert_eq!(closure(&g, &[0]).ids, vec![0, 2]);
    }

    #[test]
    fn unsatisfiable_clauses_are_reported_not_fatal() {
        let g = Fixed(vec![vec![clause(&[&[], &[]])]]);
        let found = closure(&g, &[0]);
        assert_eq!(found.ids, vec![0]);
        assert_eq!(found.unresolved.len(), 1);
    }

    #[test]
    fn cycles_terminate() {
        let g = Fixed(vec![vec![clause(&[&[1]])], vec![clause(&[&[0]])]]);
        assert_eq!(closure(&g, &[1]).ids, vec![0, 1]);
    }

    struct Ranked(Vec<Vec<Clause>>, Vec<bool>);
    impl Graph for Ranked {
        fn clauses(&self, id: usize) -> Vec<Clause> {
            self.0[id].clone()
        }
        fn preference(&self, id: usize) -> Option<&'static str> {
            self.1[id].then_some("required")
        }
    }

    #[test]
    fn among_several_providers_the_preferred_then_the_smallest_is_taken() {
        // 0 needs awk: 1 (gawk: optional, needs 3 and 4) or 2 (mawk:
        // required, needs nothing).  gawk comes first in the clause.
        let clauses = vec![
            vec![clause(&[&[1, 2]])],
            vec![clause(&[&[3]]), clause(&[&[4]])],
            vec![],
            vec![],
            vec![],
        ];
        let g = Ranked(clauses.clone(), vec![false, false, true, false, false]);
        let found = closure(&g, &[0]);
        assert_eq!(found.ids, vec![0, 2]);
        assert_eq!(found.choices[0].candidates, vec![(2, 0), (1, 2)]);
        // With no preference, the one that adds fewer packages.
        let g = Ranked(clauses, vec![false; 5]);
        assert_eq!(closure(&g, &[0]).ids, vec![0, 2]);
        // An alternative already chosen still satisfies the clause.
        let g = Fixed(vec![vec![clause(&[&[1], &[2]])], vec![], vec![]]);
        assert_eq!(closure(&g, &[0, 1]).ids, vec![0, 1]);
    }
}
