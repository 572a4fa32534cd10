// The evaluation library behind `mlactl eval`: a model exposes only `scoreSequences` (types.ts); loglikelihood.ts
// turns text requests into scored tokens; tasks are YAML + a parser or generator; runner.ts scores and
// aggregates; results.ts writes the run's eval/ folder.
export * from './types';
export * from './loglikelihood';
export * from './metrics';
export * from './formats';
export * from './tasks';
export * from './brown-tasks';
export * from './runner';
export * from './results';
