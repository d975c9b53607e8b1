//! How the report writes its figures: thousands separators, microseconds and a target's
//! verdict.

pub(super) fn verdict(value: f64, target: f64, higher_is_better: bool) -> String {
    if !value.is_finite() {
        return "not measured".to_owned();
    }
    let met = if higher_is_better {
        value >= target
    } else {
        value <= target
    };
    if met {
        "met".to_owned()
    } else {
        let short = if higher_is_better {
            (target - value) / target
        } else {
            (value - target) / target
        };
        format!("**missed** by {:.0} %", short * 100.0)
    }
}

pub(crate) fn fmt_ops(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    let v = v.round() as u64;
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn fmt_us(v: f64) -> String {
    if !v.is_finite() {
        "–".to_owned()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}
