"""The one metric catalogue: LOINC, MDC (IEEE 11073-10101) and UCUM per measurement.

Rows follow ../shared/PROTOCOLS.md §5 (HL7 PHD IG examples and FHIR vital-sign profiles).
MDC codes are partition * 65536 + term; partition 2 (SCADA) gives the 14xxxx-18xxxx codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.model import Unit

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True, slots=True)
class Metric:
    """One kind of measurement and its codes."""

    key: str
    loinc: str
    mdc: int | None
    display: str
    units: tuple[Unit, ...]
    vital_sign: bool = False
    mdc_ref: str | None = None
    # FHIR observation-category code for a metric that is not a vital sign (laboratory, exam,
    # procedure); None keeps an Observation without a category, as before.
    category: str | None = None


_M, _V = Metric, True
_GLU = (Unit.MG_PER_DL, Unit.MMOL_PER_L)
_METRICS = (
    _M("bp_panel", "85354-9", 150020, "Blood pressure panel", (), _V, "MDC_PRESS_BLD_NONINV"),
    _M("bp_systolic", "8480-6", 150021, "Systolic blood pressure", (Unit.MMHG, Unit.KPA), _V,
       "MDC_PRESS_BLD_NONINV_SYS"),
    _M("bp_diastolic", "8462-4", 150022, "Diastolic blood pressure", (Unit.MMHG, Unit.KPA), _V,
       "MDC_PRESS_BLD_NONINV_DIA"),
    # PROTOCOLS.md marks 8478-0 for MAP [unverified]; LOINC names it "Mean blood pressure".
    # Not a FHIR vital sign, hence vital_sign False.
    _M("bp_mean", "8478-0", 150023, "Mean blood pressure", (Unit.MMHG, Unit.KPA), False,
       "MDC_PRESS_BLD_NONINV_MEAN"),
    _M("pulse_rate_cuff", "8867-4", 149546, "Heart rate", (Unit.PER_MIN,), _V,
       "MDC_PULS_RATE_NON_INV"),
    _M("body_weight", "29463-7", 188736, "Body weight", (Unit.KG, Unit.LB), _V,
       "MDC_MASS_BODY_ACTUAL"),
    _M("body_height", "8302-2", 188740, "Body height", (Unit.M, Unit.IN), _V,
       "MDC_LEN_BODY_ACTUAL"),
    _M("bmi", "39156-5", 188752, "Body mass index", (Unit.KG_PER_M2,), _V,
       "MDC_RATIO_MASS_BODY_LEN_SQ"),
    _M("spo2", "2708-6", 150456, "Oxygen saturation in Arterial blood", (Unit.PERCENT,), _V,
       "MDC_PULS_OXIM_SAT_O2"),
    _M("pulse_rate_oximeter", "8867-4", 149530, "Heart rate", (Unit.PER_MIN,), _V,
       "MDC_PULS_OXIM_PULS_RATE"),
    _M("body_temperature", "8310-5", 150364, "Body temperature", (Unit.CEL, Unit.DEGF), _V,
       "MDC_TEMP_BODY"),
    # Spirometry and peak flow (LOINC: FEV1, FVC, peak expiratory flow by peak flow meter).
    # MDC 152584 is in the HL7 FHIR core example observation-example-spirometry; 152586 and
    # 188928 come from public IEEE 11073-10101 term tables (partition 2, terms 21514 and
    # 57856) and the 11073-10421 peak flow profile; not yet checked against RTMMS.
    _M("fev1", "20150-9", 152586, "FEV1", (Unit.L,), False, "MDC_VOL_AWAY_EXP_FORCED_1S"),
    _M("fvc", "19868-9", 188928, "FVC", (Unit.L,), False, "MDC_VOL_AWAY_EXP_FORCED_CAPACITY"),
    _M("pef", "19935-6", 152584, "Peak expiratory flow", (Unit.L_PER_MIN,), False,
       "MDC_FLOW_AWAY_EXP_FORCED_PEAK"),
    # Body Composition Measurement (0x2A9C). LOINC 41982-0 "Percentage of body fat Measured"
    # [src: public FHIR profiles and HealthKit-to-LOINC maps; the LOINC table itself not read].
    # MDC_BODY_FAT is SCADA term 57676 (signove/antidote@3a316ac6 src/dim/nomenclature.h), so
    # 2 * 65536 + 57676 = 188748. The other BCS fields have no verified LOINC code and stay out
    # of the catalogue (see adapters/ble_body_composition.py). Not a FHIR vital sign.
    _M("body_fat", "41982-0", 188748, "Percentage of body fat Measured", (Unit.PERCENT,), False,
       "MDC_BODY_FAT"),
    # Glucose (0x2A18), one row per BLE sample type: the MDC code carries the specimen
    # (PROTOCOLS.md §5; terms 28948 and 29112-29140 also in cdealti/zigbee_firmware@178edc2a
    # .../BeeApps/HC/NomenclatureCodes.h). The LOINC is the mass code 2339-0 ("in Blood", also
    # for plasma, ISF and control: LOINC optional here, the MDC code is the precise one); a
    # mmol/L value carries GLUCOSE_MOLES_LOINC instead, so the display names no unit. Undetermined
    # whole blood (likely 160364) is unverified and falls back to the generic 160020.
    _M("glucose", "2339-0", 160020, "Glucose in blood", _GLU, False, "MDC_CONC_GLU_GEN"),
    _M("glucose_capillary_whole_blood", "2339-0", 160184, "Glucose in capillary whole blood",
       _GLU, False, "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD"),
    _M("glucose_capillary_plasma", "2339-0", 160188, "Glucose in capillary plasma", _GLU, False,
       "MDC_CONC_GLU_CAPILLARY_PLASMA"),
    _M("glucose_venous_whole_blood", "2339-0", 160192, "Glucose in venous whole blood", _GLU,
       False, "MDC_CONC_GLU_VENOUS_WHOLEBLOOD"),
    _M("glucose_venous_plasma", "2339-0", 160196, "Glucose in venous plasma", _GLU, False,
       "MDC_CONC_GLU_VENOUS_PLASMA"),
    _M("glucose_arterial_whole_blood", "2339-0", 160200, "Glucose in arterial whole blood", _GLU,
       False, "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD"),
    _M("glucose_arterial_plasma", "2339-0", 160204, "Glucose in arterial plasma", _GLU, False,
       "MDC_CONC_GLU_ARTERIAL_PLASMA"),
    _M("glucose_control_solution", "2339-0", 160208, "Glucose in control solution", _GLU, False,
       "MDC_CONC_GLU_CONTROL"),
    _M("glucose_interstitial_fluid", "2339-0", 160212, "Glucose in interstitial fluid", _GLU,
       False, "MDC_CONC_GLU_ISF"),
    _M("glucose_undetermined_plasma", "2339-0", 160368, "Glucose in plasma", _GLU, False,
       "MDC_CONC_GLU_UNDETERMINED_PLASMA"),
    # IBD home test (issue 8): LOINC 38445-3 "Calprotectin [Mass/mass] in Stool", reported in
    # ug/g (public FHIR/LOINC unit maps that pair 38445-3 with UCUM ug/g; the LOINC table itself
    # not read). No MDC term exists for it.
    _M("faecal_calprotectin", "38445-3", None, "Calprotectin [Mass/mass] in Stool",
       (Unit.UG_PER_G,), category="laboratory"),
    # Home tonometer: LOINC 79892-6 "Right eye Intraocular pressure" and 79893-4 "Left eye
    # Intraocular pressure" (laterality in the code, so no bodySite is needed; USCDI v6 lists
    # 79892-6 as its IOP code; phenopackets examples use both). No MDC term is known.
    _M("iop_right", "79892-6", None, "Right eye Intraocular pressure", (Unit.MMHG,),
       category="exam"),
    _M("iop_left", "79893-4", None, "Left eye Intraocular pressure", (Unit.MMHG,),
       category="exam"),
    # Urine test strip pads, one LOINC per analyte, "by Test strip" method. The ordinal pads use
    # the [Presence] (Ord) codes, whose results are codes (negative, trace, 1+ ...), not the
    # [Mass/volume] (Qn) codes 5792-7 and 5804-0, which expect a concentration. Displays as in
    # public LOINC value sets (e.g. the HL7 US lab IG's urinalysis examples).
    _M("urine_glucose", "25428-4", None, "Glucose [Presence] in Urine by Test strip",
       (Unit.NONE,), category="laboratory"),
    _M("urine_protein", "20454-5", None, "Protein [Presence] in Urine by Test strip",
       (Unit.NONE,), category="laboratory"),
    _M("urine_blood", "5794-3", None, "Hemoglobin [Presence] in Urine by Test strip",
       (Unit.NONE,), category="laboratory"),
    _M("urine_leukocytes", "5799-2", None, "Leukocyte esterase [Presence] in Urine by Test strip",
       (Unit.NONE,), category="laboratory"),
    _M("urine_nitrite", "5802-4", None, "Nitrite [Presence] in Urine by Test strip",
       (Unit.NONE,), category="laboratory"),
    _M("urine_ketones", "2514-8", None, "Ketones [Presence] in Urine by Test strip",
       (Unit.NONE,), category="laboratory"),
    _M("urine_bilirubin", "5770-3", None, "Bilirubin [Presence] in Urine by Test strip",
       (Unit.NONE,), category="laboratory"),
    _M("urine_ph", "5803-2", None, "pH of Urine by Test strip", (Unit.PH,),
       category="laboratory"),
    _M("urine_specific_gravity", "5811-5", None, "Specific gravity of Urine by Test strip",
       (Unit.NONE,), category="laboratory"),
    # Urinalysis dipstick panel: LOINC 50556-0 "Urinalysis dipstick panel - Urine by Automated
    # test strip" [unverified: from memory of the LOINC table]; groups one strip's pads.
    _M("urine_panel", "50556-0", None, "Urinalysis dipstick panel - Urine by Automated test strip",
       (), category="laboratory"),
    # One-lead ECG (handheld or wrist recorder, AF screening). The recording is one waveform
    # row: MDC 131329 MDC_ECG_ELEC_POTL_I (2 * 65536 + 257), the lead-I code of the HL7 FHIR R4
    # core example observation-example-sample-data, whose lead components carry
    # valueSampledData in the category procedure. LOINC 11524-6 "EKG study" names the recording
    # as a whole (the LOINC waveform codes are per 12-lead panel; public FHIR ECG profiles fix
    # a recording's code to 11524-6 with one mV SampledData per lead) [LOINC table not read].
    _M("ecg_lead_i", "11524-6", 131329, "EKG study", (Unit.MV,), False, "MDC_ECG_ELEC_POTL_I",
       category="procedure"),
    # The device's rhythm classification, a coded result (SNOMED CT, adapters/ecg.py): LOINC
    # 8601-7 "EKG impression", the code C-CDA examples use for an ECG's interpretation. Not
    # 11524-6, which the waveform row holds (one code per row: the store's key), and not
    # 8884-9 "Heart rate rhythm", a palpated pulse's regular/irregular. No MDC term is used.
    _M("ecg_rhythm", "8601-7", None, "EKG impression", (Unit.NONE,), category="procedure"),
    # Heart rate the recorder derived from the ECG: LOINC 8867-4 with MDC 147842
    # MDC_ECG_HEART_RATE (2 * 65536 + 16770; paired with 8867-4 in public FHIR vital-sign
    # profiles, e.g. German ENRICH mHealth examples), so it is told apart from a cuff's or an
    # oximeter's pulse by its MDC code.
    _M("ecg_heart_rate", "8867-4", 147842, "Heart rate", (Unit.PER_MIN,), _V,
       "MDC_ECG_HEART_RATE"),
)
# LOINC 15074-8 "Glucose [Moles/volume] in Blood", used with mmol/L (PROTOCOLS.md §5).
GLUCOSE_MOLES_LOINC = "15074-8"

METRICS: dict[str, Metric] = {metric.key: metric for metric in _METRICS}
BY_MDC: dict[int, Metric] = {m.mdc: m for m in _METRICS if m.mdc is not None}
# Metrics without an MDC code (laboratory home tests) are found by LOINC instead.
BY_LOINC_ONLY: dict[str, Metric] = {m.loinc: m for m in _METRICS if m.mdc is None}


def metric(key: str) -> Metric:
    """Look a metric up by key; an unknown key is a programming error and says so."""
    try:
        return METRICS[key]
    except KeyError:
        raise KeyError(f"no metric {key!r} in the catalogue") from None
