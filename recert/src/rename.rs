//! Name changes: `cn_san_replace_rules` (exact values), the cluster rename (`<name>.<domain>`
//! inside DNS names and URLs, and the infra ID), hostname and IP. Each rule counts its matches so
//! the summary can warn about rules that matched nothing.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::cert::NameRewriter;

#[derive(Debug)]
pub struct Rule {
    pub what: &'static str,
    pub old: String,
    pub new: String,
    pub how: Match,
    /// Whether the rule also applies to free text (kubeconfig URLs, configmap values).
    pub in_text: bool,
    hits: AtomicUsize,
}

/// How a rule matches a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The whole value (CN/SAN rules, hostnames, IPs).
    Exact,
    /// The end of the value: `system:node:<host>`, `system:etcd-server:<host>`.
    Suffix,
    /// Anywhere (cluster domain, infra ID).
    Substring,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleReport {
    pub rule: String,
    pub old: String,
    pub new: String,
    pub matches: usize,
}

#[derive(Debug, Default)]
pub struct Renamer {
    pub rules: Vec<Rule>,
}

impl Renamer {
    pub fn add(&mut self, what: &'static str, old: &str, new: &str, how: Match, in_text: bool) {
        self.rules.push(Rule {
            what,
            old: old.into(),
            new: new.into(),
            how,
            in_text,
            hits: AtomicUsize::new(0),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Apply the text rules to a kubeconfig or configmap value.
    pub fn rewrite_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for r in self.rules.iter().filter(|r| r.in_text && r.old != r.new) {
            let n = out.matches(r.old.as_str()).count();
            if n > 0 {
                r.hits.fetch_add(n, Ordering::Relaxed);
                out = out.replace(r.old.as_str(), &r.new);
            }
        }
        out
    }

    pub fn report(&self) -> Vec<RuleReport> {
        self.rules
            .iter()
            .map(|r| RuleReport {
                rule: r.what.into(),
                old: r.old.clone(),
                new: r.new.clone(),
                matches: r.hits.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl NameRewriter for Renamer {
    fn rewrite(&self, value: &str) -> Option<String> {
        // An exact rule decides the whole value.
        for r in self.rules.iter().filter(|r| r.how == Match::Exact) {
            if value == r.old {
                r.hits.fetch_add(1, Ordering::Relaxed);
                return Some(r.new.clone());
            }
        }
        let mut out = value.to_string();
        for r in self.rules.iter().filter(|r| r.how == Match::Suffix) {
            if let Some(head) = out.strip_suffix(r.old.as_str()) {
                r.hits.fetch_add(1, Ordering::Relaxed);
                out = format!("{head}{}", r.new);
            }
        }
        for r in self.rules.iter().filter(|r| r.how == Match::Substring) {
            if out.contains(r.old.as_str()) {
                r.hits.fetch_add(1, Ordering::Relaxed);
                out = out.replace(r.old.as_str(), &r.new);
            }
        }
        (out != value).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_rules_win_and_every_rule_counts_its_matches() {
        let mut r = Renamer::default();
        r.add(
            "cn_san_replace_rules",
            "localhost.seed",
            "localhost.new",
            Match::Exact,
            false,
        );
        r.add(
            "cluster_rename",
            "seed.example.com",
            "new.example.org",
            Match::Substring,
            true,
        );
        r.add("hostname", ":seed-node", ":new-node", Match::Suffix, false);
        assert_eq!(
            r.rewrite("api.seed.example.com").as_deref(),
            Some("api.new.example.org")
        );
        assert_eq!(
            r.rewrite("*.apps.seed.example.com").as_deref(),
            Some("*.apps.new.example.org")
        );
        assert_eq!(
            r.rewrite("system:node:seed-node").as_deref(),
            Some("system:node:new-node")
        );
        assert_eq!(
            r.rewrite("localhost.seed").as_deref(),
            Some("localhost.new")
        );
        assert_eq!(r.rewrite("kube-apiserver-lb-signer"), None);
        assert_eq!(
            r.rewrite_text("server: https://api-int.seed.example.com:6443"),
            "server: https://api-int.new.example.org:6443"
        );
        let hits: Vec<usize> = r.report().iter().map(|x| x.matches).collect();
        assert_eq!(hits, [1, 3, 1]);
    }
}
