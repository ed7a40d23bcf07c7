"""Sensor firmware: MCUboot images (:mod:`.image`) checked before they are uploaded to a sensor
over MCUmgr SMP."""
