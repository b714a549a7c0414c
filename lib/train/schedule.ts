/**
 * Learning-rate schedule: linear warmup, then cosine decay (DESIGN.md §1, "cosine schedule
 * with warmup"). Steps are 0-based optimiser steps; with W = warmupSteps, N = totalSteps,
 * lrMin = minLrRatio·lr:
 *
 *   step < W:        lr · (step + 1) / W                          (step 0 → lr/W, step W−1 → lr)
 *   W ≤ step < N:    lrMin + (lr − lrMin) · ½ · (1 + cos(π · (step − W) / (N − W)))
 *   step ≥ N:        lrMin                                         (clamped)
 *
 * so step W trains at the full lr and step N would reach lrMin; the last step of a run
 * (N − 1) is one cosine notch above it. Warmup counts from 1 (unlike transformers'
 * get_cosine_schedule_with_warmup, whose step 0 has lr 0) so that no step is wasted.
 * When N ≤ W every step is a warmup step until N, then lrMin.
 */
import { ArgumentError } from '../errors';

export interface ScheduleOptions {
  /** peak learning rate */
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  /** final lr as a fraction of lr (default 0) */
  minLrRatio?: number;
}

export function learningRate(step: number, o: ScheduleOptions): number {
  const { lr, warmupSteps: W, totalSteps: N } = o;
  const ratio = o.minLrRatio ?? 0;
  if (!Number.isInteger(step) || step < 0) throw new ArgumentError(`learningRate: 'step' expected an integer >= 0, received ${step}`);
  if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0)
    throw new ArgumentError(`learningRate: 'lr' expected a finite number >= 0, received ${lr}`);
  if (!Number.isInteger(W) || W < 0) throw new ArgumentError(`learningRate: 'warmupSteps' expected an integer >= 0, received ${W}`);
  if (!Number.isInteger(N) || N < 0) throw new ArgumentError(`learningRate: 'totalSteps' expected an integer >= 0, received ${N}`);
  if (typeof ratio !== 'number' || !(ratio >= 0 && ratio <= 1))
    throw new ArgumentError(`learningRate: 'minLrRatio' expected a number in [0, 1], received ${ratio}`);
  const lrMin = ratio * lr;
  if (step >= N) return lrMin;
  if (step < W) return (lr * (step + 1)) / W;
  const progress = (step - W) / (N - W);
  return lrMin + (lr - lrMin) * 0.5 * (1 + Math.cos(Math.PI * progress));
}
