"""MDC nomenclature codes (IEEE 11073-10101) the codecs emit.

32-bit context-free codes: partition << 16 | term code. Names follow the standard's reference
identifiers. Display names, LOINC codes and UCUM units live in the FHIR code table
(``gateway/fhir/codes.toml``), not here.
"""

from __future__ import annotations

from typing import Final

# -- Observation types (partition 2, SCADA) -------------------------------------------------------
MDC_ECG_ELEC_POTL: Final = 131328  # ECG lead unspecified
MDC_ECG_ELEC_POTL_I: Final = 131329
MDC_ECG_ELEC_POTL_II: Final = 131330
MDC_ECG_ELEC_POTL_III: Final = 131389
MDC_ECG_TIME_PD_RR_GL: Final = 147240  # RR interval
MDC_ECG_HEART_RATE: Final = 147842
MDC_PULS_OXIM_PULS_RATE: Final = 149530
MDC_PULS_RATE_NON_INV: Final = 149546
MDC_PRESS_BLD_NONINV: Final = 150020  # compound systolic/diastolic/mean
MDC_PRESS_BLD_NONINV_SYS: Final = 150021
MDC_PRESS_BLD_NONINV_DIA: Final = 150022
MDC_PRESS_BLD_NONINV_MEAN: Final = 150023
MDC_PULS_OXIM_PLETH: Final = 150452
MDC_PULS_OXIM_SAT_O2: Final = 150456
MDC_TEMP_BODY: Final = 150364

# -- Dimensions (partition 4) ---------------------------------------------------------------------
MDC_DIM_DIMLESS: Final = 512
MDC_DIM_PERCENT: Final = 544
MDC_DIM_MILLI_SEC: Final = 2194
MDC_DIM_BEAT_PER_MIN: Final = 2720
MDC_DIM_KILO_PASCAL: Final = 3843
MDC_DIM_MMHG: Final = 3872
MDC_DIM_MILLI_VOLT: Final = 4274
MDC_DIM_FAHR: Final = 4416
MDC_DIM_DEGC: Final = 6048

# -- Devices (partition 8, infrastructure) --------------------------------------------------------
MDC_MOC_VMS_MDS_AHD: Final = 531981  # the gateway (application hosting device)
