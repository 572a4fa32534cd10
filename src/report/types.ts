// What `mlactl compare` holds of one run folder. The file types are the run folder's (src/runfolder/types.ts).
import type { Config } from '../config/types';
import type { EvalPoint, EvalResultsFile, HeadMaxLogit, MetricsRow, RunManifest, RunSummary } from '../runfolder/types';

export type {
  EvalMetricValue, EvalPoint, EvalResultsFile, EvalTaskEntry, ExperimentFile, HeadMaxLogit, MetricsRow, RunManifest, RunStatus, RunSummary,
} from '../runfolder/types';
export { RUN_STATUSES } from '../runfolder/types';

/** Everything compare knows about one run folder. */
export interface LoadedRun {
  /** Absolute path of the run folder. */
  dir: string;
  /** Unique display name: the experiment's arm name, else the folder name (prefixed by its parent on a clash). */
  id: string;
  /** The experiment folder this run was reached through, if any. */
  experimentDir: string | null;
  config: Config;
  manifest: RunManifest;
  summary: RunSummary;
  /** True when summary.json was not written yet (the trainer writes it at the first checkpoint): the status is inferred. */
  summaryInferred: boolean;
  metrics: MetricsRow[];
  evalResults: EvalResultsFile | null;
  evalByStep: EvalPoint[];
  headMaxLogits: HeadMaxLogit[] | null;
}

