# The part of hdrhistogram's log API that echotwist uses.

from typing import TextIO

from hdrh.histogram import HdrHistogram

class HistogramLogWriter:
    def __init__(self, output_file: TextIO) -> None: ...
    def output_interval_histogram(
        self,
        histogram: HdrHistogram,
        start_time_stamp_sec: float = 0,
        end_time_stamp_sec: float = 0,
        max_value_unit_ratio: float = 1000000.0,
    ) -> None: ...
    def output_start_time(self, start_time_msec: float) -> None: ...
    def output_base_time(self, base_time_msec: float) -> None: ...
    def output_comment(self, comment: str) -> None: ...
    def output_legend(self) -> None: ...
    def output_log_format_version(self) -> None: ...
    def close(self) -> None: ...

class HistogramLogReader:
    def __init__(
        self, input_file_name: str, reference_histogram: HdrHistogram
    ) -> None: ...
    def get_next_interval_histogram(
        self,
        range_start_time_sec: float = 0.0,
        range_end_time_sec: float = ...,
        absolute: bool = False,
    ) -> HdrHistogram | None: ...
    def add_next_interval_histogram(
        self,
        dest_histogram: HdrHistogram | None = None,
        range_start_time_sec: float = 0.0,
        range_end_time_sec: float = ...,
        absolute: bool = False,
    ) -> HdrHistogram | None: ...
    def close(self) -> None: ...
