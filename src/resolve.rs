//! Dependency closure, independent of the package manager.
//!
//! A backend describes each package's requirements as clauses of
//! alternatives, each alternative a list of candidate packages in the
//! backend's order of preference.  The closure is then the same for all
//! backends: breadth-first from the inputs, and for each clause
//! - if some candidate of any alternative is already chosen, the clause is
//!   satisfied (so `a | b` never drags in `a` when `b` is already there);
//! - otherwise the first candidate of the first alternative that has one.
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
}

/// The closure of `roots`: sorted package ids, and the clauses that no
/// installed package satisfies (`(package id, clause text)`).
pub fn closure(graph: &dyn Graph, roots: &[usize]) -> (Vec<usize>, Vec<(usize, String)>) {
    let mut chosen: BTreeSet<usize> = BTreeSet::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    for &r in roots {
        if chosen.insert(r) {
            queue.push_back(r);
        }
    }
    let mut unresolved = Vec::new();
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
            match clause.alternatives.iter().find_map(|alt| alt.first()) {
                Some(&pick) => {
                    chosen.insert(pick);
                    queue.push_back(pick);
                }
                None => unresolved.push((id, clause.text)),
            }
        }
    }
    (chosen.into_iter().collect(), unresolved)
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
) -> Vec<crate::package::Package> {
    let (closure, unresolved) = closure(graph, roots);
    for (id, text) in unresolved {
        reporter.info(1, || {
            format!(
                "{backend}: {}: '{text}' is not satisfied by any installed package",
                package(id).name
            )
        });
    }
    let mut out: Vec<crate::package::Package> =
        closure.into_iter().map(|i| package(i).clone()).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.arch.cmp(&b.arch)));
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
        assert_eq!(closure(&g, &[0]).0, vec![0, 1, 2]);
    }

    #[test]
    fn alternative_already_chosen_wins() {
        // 0 needs (1 | 2); 2 is an input too, so 1 must not be pulled in.
        let g = Fixed(vec![vec![clause(&[&[1], &[2]])], vec![], vec![]]);
        assert_eq!(closure(&g, &[2, 0]).0, vec![0, 2]);
        assert_eq!(closure(&g, &[0]).0, vec![0, 1]);
    }

    #[test]
    fn first_installed_alternative_is_used() {
        let g = Fixed(vec![vec![clause(&[&[], &[2]])], vec![], vec![]]);
        assert_eq!(closure(&g, &[0]).0, vec![0, 2]);
    }

    #[test]
    fn unsatisfiable_clauses_are_reported_not_fatal() {
        let g = Fixed(vec![vec![clause(&[&[], &[]])]]);
        let (ids, missing) = closure(&g, &[0]);
        assert_eq!(ids, vec![0]);
        assert_eq!(missing.len(), 1);
    }

    #[test]
    fn cycles_terminate() {
        let g = Fixed(vec![vec![clause(&[&[1]])], vec![clause(&[&[0]])]]);
        assert_eq!(closure(&g, &[1]).0, vec![0, 1]);
    }
}
