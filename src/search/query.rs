//! What a search looks for: the package name in what the user typed.

use crate::spec::normalize_project_name;

/// The package name in what the user typed, which may be a whole entry
/// (`bioconda::samtools=1.21`, `pip:requests==2.32.3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The name as typed, lowercased (conda names are lowercase); empty when there is none.
    pub conda: String,
    /// The name normalized per PEP 503, when it is a valid project name.
    pub pypi: Option<String>,
}

impl Query {
    /// Finds the name part: strips `pip:`, a channel (`x::`), and everything from the first
    /// version or extras delimiter.
    pub fn parse(text: &str) -> Query {
        let text = text.trim();
        let text = text
            .strip_prefix("pip::")
            .or_else(|| text.strip_prefix("pip:"))
            .unwrap_or(text);
        let text = text.rsplit_once("::").map_or(text, |(_, name)| name);
        let end = text
            .find(|c: char| "=<>!~[ ;".contains(c))
            .unwrap_or(text.len());
        let name = text[..end].trim();
        Query {
            conda: name.to_lowercase(),
            pypi: normalize_project_name(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_reduced_to_the_name() {
        let cases = [
            ("pip:requests==2.32.3", "requests", Some("requests")),
            ("bioconda::samtools=1.21", "samtools", Some("samtools")),
            ("  samtools  ", "samtools", Some("samtools")),
            ("samtools 1.21", "samtools", Some("samtools")),
            (
                "pip:Flask_SQLAlchemy[async]>=3",
                "flask_sqlalchemy",
                Some("flask-sqlalchemy"),
            ),
            ("pip::six", "six", Some("six")),
            ("conda-forge/label/x::numpy<2", "numpy", Some("numpy")),
            (
                "pip:requests ; python_version>'3'",
                "requests",
                Some("requests"),
            ),
            ("r-base!=4", "r-base", Some("r-base")),
            ("scipy~=1.1", "scipy", Some("scipy")),
            ("_libgcc_mutex", "_libgcc_mutex", None),
            ("", "", None),
            ("   ", "", None),
            ("==1.0", "", None),
        ];
        for (text, conda, pypi) in cases {
            let query = Query::parse(text);
            assert_eq!(query.conda, conda, "{text}");
            assert_eq!(query.pypi.as_deref(), pypi, "{text}");
        }
    }
}
