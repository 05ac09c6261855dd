"""Data: input sources -> canonical dataset (parquet + manifest) -> splits -> torch batching."""

from semrec.data.build import build_dataset
from semrec.data.dataset import CanonicalDataset, SourceData
from semrec.data.splits import LeaveLastOutSplit, leave_last_out

__all__ = ["CanonicalDataset", "SourceData", "build_dataset", "LeaveLastOutSplit", "leave_last_out"]
