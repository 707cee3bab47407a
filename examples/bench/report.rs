//! The Markdown report: a header (date, machine, commit), the goals met or missed, then one
//! section per measurement with its table and how it was measured.

use std::time::Duration;

use crate::machine::MachineInfo;

/// A Markdown table.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.header);
        out.push_str(&line(&vec!["---".to_owned(); self.header.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// One of the goals, against what this run measured.
#[derive(Debug)]
pub struct Goal {
    pub name: String,
    pub target: String,
    pub measured: String,
    /// None: not measurable in this run (a part failed).
    pub met: Option<bool>,
}

/// One measurement's results.
#[derive(Debug, Default)]
pub struct Section {
    pub title: String,
    pub body: String,
    pub goals: Vec<Goal>,
}

impl Section {
    pub fn new(title: &str) -> Section {
        Section {
            title: title.to_owned(),
            ..Default::default()
        }
    }

    pub fn text(&mut self, text: &str) {
        self.body.push_str(text.trim_end());
        self.body.push_str("\n\n");
    }

    pub fn table(&mut self, table: &Table) {
        self.body.push_str(&table.markdown());
        self.body.push('\n');
    }

    pub fn goal(&mut self, name: &str, target: &str, measured: String, met: Option<bool>) {
        self.goals.push(Goal {
            name: name.to_owned(),
            target: target.to_owned(),
            measured,
            met,
        });
    }
}

pub struct Report {
    machine: MachineInfo,
    sections: Vec<Section>,
    took: Option<Duration>,
}

impl Report {
    pub fn new(machine: MachineInfo) -> Report {
        Report {
            machine,
            sections: Vec::new(),
            took: None,
        }
    }

    /// Prints the section as it comes (a long run shows progress) and keeps it for the file.
    pub fn add(&mut self, section: Section) {
        eprintln!("\n## {}\n\n{}", section.title, section.body);
        self.sections.push(section);
    }

    pub fn finish(&mut self, took: Duration) {
        self.took = Some(took);
    }

    pub fn header_text(&self) -> String {
        let m = &self.machine;
        let mut out = String::from("# camportal benchmarks\n\n");
        if m.quick {
            out.push_str(
                "**Quick run** (`--quick`): short windows and few sizes, a smoke test of the \
                 harness, not figures to quote.\n\n",
            );
        }
        let mut t = Table::new(&["", ""]);
        t.row(vec!["date".into(), m.date.clone()]);
        t.row(vec!["commit".into(), m.commit.clone()]);
        t.row(vec!["machine".into(), m.machine.clone()]);
        t.row(vec!["system".into(), m.system.clone()]);
        t.row(vec![
            "machine CPU busy at start".into(),
            format!(
                "{} (anything else running skews CPU and latency figures)",
                m.busy
            ),
        ]);
        t.row(vec!["ffmpeg".into(), m.ffmpeg.clone()]);
        t.row(vec!["chromium".into(), m.chromium.clone()]);
        out.push_str(&t.markdown());
        out.push_str(&format!(
            "\nCommand: `{}`\n",
            if m.quick {
                "cargo run --release --example bench -- --quick"
            } else {
                "cargo run --release --example bench"
            }
        ));
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = self.header_text();
        let goals: Vec<&Goal> = self.sections.iter().flat_map(|s| &s.goals).collect();
        if !goals.is_empty() {
            out.push_str("\n## Goals\n\n");
            let mut t = Table::new(&["goal", "target", "measured", "met"]);
            for g in goals {
                let met = match g.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "not measured",
                };
                t.row(vec![
                    g.name.clone(),
                    g.target.clone(),
                    g.measured.clone(),
                    met.to_owned(),
                ]);
            }
            out.push_str(&t.markdown());
        }
        for section in &self.sections {
            out.push_str(&format!("\n## {}\n\n{}", section.title, section.body));
        }
        if let Some(took) = self.took {
            out.push_str(&format!(
                "\n---\nThe run took {:.1} min.\n",
                took.as_secs_f64() / 60.0
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_markdown() {
        let mut t = Table::new(&["size", "ratio"]);
        t.row(vec!["1280x720".into(), "0.92".into()]);
        assert_eq!(
            t.markdown(),
            "| size | ratio |\n| --- | --- |\n| 1280x720 | 0.92 |\n"
        );
    }
}
