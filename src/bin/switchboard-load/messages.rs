//! Synthetic HL7 v2 messages: a realistic mix of results, admissions,
//! orders and device alarms. Every name is `ZZTEST^LOAD`; identifiers are
//! derived from the message counter; nothing is real data.

use std::fmt::Write as _;

/// The kinds in the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// ORU^R01, seven OBX, one of them a critical (HH) potassium.
    OruR01,
    /// ADT^A01 admission.
    AdtA01,
    /// ADT^A08 patient update.
    AdtA08,
    /// ORM^O01 new order, STAT in ORC-7.
    OrmO01,
    /// ORU^R40 IHE PCD alarm.
    OruR40,
}

impl Kind {
    /// The mix, per ten messages: 4 ORU^R01, 1 A01, 2 A08, 2 ORM, 1 R40.
    pub fn for_counter(n: u64) -> Kind {
        match n % 10 {
            0 | 3 | 5 | 8 => Kind::OruR01,
            1 => Kind::AdtA01,
            2 | 7 => Kind::AdtA08,
            4 | 9 => Kind::OrmO01,
            _ => Kind::OruR40,
        }
    }
}

/// What every message shares: the sending application and facility, and
/// MSH-7.
#[derive(Clone, Debug)]
pub struct Template {
    /// MSH-3.
    pub sending_app: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-7 (`YYYYMMDDHHMMSS`).
    pub timestamp: String,
    /// MSH-11.
    pub processing_id: String,
    /// End-to-end runs: every message is a critical result for its own
    /// patient, in room `n` (so the delivered alert names the message).
    pub critical_only: bool,
}

impl Template {
    /// The HL7 payload (segments ended by CR, no MLLP framing) of message
    /// `n` with MSH-10 `control_id`.
    pub fn message(&self, n: u64, control_id: &str) -> String {
        let kind = if self.critical_only {
            Kind::OruR01
        } else {
            Kind::for_counter(n)
        };
        let (msh9, body) = match kind {
            Kind::OruR01 => ("ORU^R01^ORU_R01", self.oru_r01(n)),
            Kind::AdtA01 => ("ADT^A01^ADT_A01", self.adt("A01", n)),
            Kind::AdtA08 => ("ADT^A08^ADT_A01", self.adt("A08", n)),
            Kind::OrmO01 => ("ORM^O01^ORM_O01", self.orm_o01(n)),
            Kind::OruR40 => ("ORU^R40^ORU_R40", self.oru_r40(n)),
        };
        let mut out = String::with_capacity(1024);
        let _ = write!(
            out,
            "MSH|^~\\&|{app}|{fac}|SWITCHBOARD|HOSP|{ts}||{msh9}|{control_id}|{pid}|2.5.1\r",
            app = self.sending_app,
            fac = self.sending_facility,
            ts = self.timestamp,
            pid = self.processing_id,
        );
        out.push_str(&body);
        out
    }

    fn patient(&self, n: u64) -> String {
        // A few hundred synthetic patients, so several messages concern
        // the same one, as on a real feed; end-to-end runs give each
        // message its own patient and room.
        let (mrn, room) = if self.critical_only {
            (1_000_000 + n, n)
        } else {
            (100_000 + n % 500, n % 24 + 1)
        };
        format!(
            "PID|1||ZZ{mrn}^^^HOSP^MR||ZZTEST^LOAD^{letter}||19700101|F\r\
             PV1|1|I|ICU^{room}^A^HOSP||||1234^ZZDOC^ATTENDING^^^^^^NPI\r",
            letter = (b'A' + (n % 26) as u8) as char,
        )
    }

    fn oru_r01(&self, n: u64) -> String {
        let ts = &self.timestamp;
        format!(
            "{pat}ORC|RE|PL{n}|FL{n}||CM||^^^^^R\r\
             OBR|1|PL{n}|FL{n}|24323-8^Comprehensive metabolic panel^LN|||{ts}|||||||||1234^ZZDOC^ORDERING||||||{ts}|||F\r\
             OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F|||{ts}\r\
             OBX|2|NM|2951-2^Sodium^LN||139|mmol/L|135-145|N|||F|||{ts}\r\
             OBX|3|NM|2075-0^Chloride^LN||101|mmol/L|98-107|N|||F|||{ts}\r\
             OBX|4|NM|2028-9^CO2^LN||24|mmol/L|22-29|N|||F|||{ts}\r\
             OBX|5|NM|3094-0^BUN^LN||18|mg/dL|7-20|N|||F|||{ts}\r\
             OBX|6|NM|2160-0^Creatinine^LN||1.1|mg/dL|0.6-1.2|N|||F|||{ts}\r\
             OBX|7|NM|2345-7^Glucose^LN||250|mg/dL|70-99|H|||F|||{ts}\r\
             NTE|1||Synthetic load-test result; critical potassium called to unit\r",
            pat = self.patient(n),
        )
    }

    fn adt(&self, trigger: &str, n: u64) -> String {
        format!(
            "EVN|{trigger}|{ts}\r{pat}",
            ts = self.timestamp,
            pat = self.patient(n)
        )
    }

    fn orm_o01(&self, n: u64) -> String {
        let ts = &self.timestamp;
        format!(
            "{pat}ORC|NW|PO{n}|||SC||^^^{ts}^^S||{ts}|||1234^ZZDOC^ORDERING\r\
             OBR|1|PO{n}||2823-3^Potassium^LN|S||{ts}|||||||||1234^ZZDOC^ORDERING\r",
            pat = self.patient(n),
        )
    }

    fn oru_r40(&self, n: u64) -> String {
        let ts = &self.timestamp;
        format!(
            "{pat}OBR|1|AL{n}|AL{n}|196616^MDC_EVT_ALARM^MDC|||{ts}\r\
             OBX|1|ST|196648^MDC_EVT_HI^MDC|1.0.0.0.1|High heart rate||||||F|||{ts}||||MONITOR-{bed}^ZZLOAD\r\
             OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.0.0.0.2|162|/min^/min^UCUM|50-120|H~PH~SP|||F|||{ts}\r\
             OBX|3|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.0.0.0.3|start||||||F\r\
             OBX|4|ST|68482^MDC_ATTR_ALARM_STATE^MDC|1.0.0.0.4|active||||||F\r",
            pat = self.patient(n),
            bed = n % 24 + 1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_has_every_kind_and_synthetic_names_only() {
        let t = Template {
            sending_app: "LOADGEN".into(),
            sending_facility: "HOSP".into(),
            timestamp: "20261123120000".into(),
            processing_id: "P".into(),
            critical_only: false,
        };
        let kinds: Vec<Kind> = (0..10).map(Kind::for_counter).collect();
        for k in [
            Kind::OruR01,
            Kind::AdtA01,
            Kind::AdtA08,
            Kind::OrmO01,
            Kind::OruR40,
        ] {
            assert!(kinds.contains(&k), "{k:?} missing from the mix");
        }
        for n in 0..10 {
            let m = t.message(n, &format!("RUN-{n}"));
            assert!(m.starts_with("MSH|^~\\&|LOADGEN|HOSP|"));
            assert!(m.contains(&format!("|RUN-{n}|P|2.5.1\r")));
            assert!(m.contains("ZZTEST^LOAD"));
            assert!(m.ends_with('\r'));
            assert!(!m.contains('\n'));
        }
        assert!(t.message(0, "X").contains("|6.9|mmol/L|3.5-5.1|HH|"));
        assert!(
            t.message(4, "X")
                .contains("ORC|NW|PO4|||SC||^^^20261123120000^^S")
        );
    }
}
