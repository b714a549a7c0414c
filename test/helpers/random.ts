export { Rng } from '../../lib/util/rng';
