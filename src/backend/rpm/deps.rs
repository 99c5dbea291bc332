//! RPM dependencies: a requirement or provide with its comparison, and
//! whether a provided version satisfies a required one (EVR order).

use rpm::DependencyFlags;

/// A requirement or provide: name, comparison, EVR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub flags: DependencyFlags,
    pub version: String,
}

impl Dep {
    pub(super) fn from(d: rpm::Dependency) -> Dep {
        Dep {
            name: d.name,
            flags: d.flags,
            version: d.version,
        }
    }

    pub(super) fn text(&self) -> String {
        let op = comparison(self.flags);
        if op.is_empty() || self.version.is_empty() {
            self.name.clone()
        } else {
            format!("{} {op} {}", self.name, self.version)
        }
    }
}

fn comparison(flags: DependencyFlags) -> &'static str {
    let less = flags.contains(DependencyFlags::LESS);
    let greater = flags.contains(DependencyFlags::GREATER);
    let equal = flags.contains(DependencyFlags::EQUAL);
    match (less, greater, equal) {
        (true, false, true) => "<=",
        (true, false, false) => "<",
        (false, true, true) => ">=",
        (false, true, false) => ">",
        (false, false, true) => "=",
        _ => "",
    }
}

/// Does a provide of version `provided` satisfy `op required`? Versions
/// compare in RPM EVR order; a missing epoch on the requirement side
/// matches any epoch, as rpm does.
pub fn version_satisfies(provided: &str, flags: DependencyFlags, required: &str) -> bool {
    let op = comparison(flags);
    if op.is_empty() || required.is_empty() || provided.is_empty() {
        return true;
    }
    let provided = if !required.contains(':') {
        provided.split_once(':').map_or(provided, |(_, rest)| rest)
    } else {
        provided
    };
    // A requirement without a release matches every release.
    let provided = if !required.contains('-') {
        provided.rsplit_once('-').map_or(provided, |(v, _)| v)
    } else {
        provided
    };
    let order = rpm::rpm_evr_compare(provided, required);
    use std::cmp::Ordering::*;
    match op {
        "<=" => order != Greater,
        "<" => order == Less,
        ">=" => order != Less,
        ">" => order == Greater,
        _ => order == Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evr_comparison_follows_rpm() {
        assert!(version_satisfies("1:2.0-1", DependencyFlags::GE, "1:1.9"));
        assert!(version_satisfies("2.0-1.el9", DependencyFlags::GE, "2.0"));
        assert!(!version_satisfies("2.0-1", DependencyFlags::GREATER, "2.0"));
        assert!(version_satisfies(
            "2.10-1",
            DependencyFlags::GREATER,
            "2.9-9"
        ));
        assert!(!version_satisfies(
            "1.0~rc1-1",
            DependencyFlags::GE,
            "1.0-1"
        ));
        assert!(version_satisfies("3", DependencyFlags::ANY, ""));
    }
}
