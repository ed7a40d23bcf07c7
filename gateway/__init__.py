"""Bedside Gateway: Bluetooth LE medical sensors to signed HL7 FHIR at the bedside."""

__version__ = "0.1.0"
