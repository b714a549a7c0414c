/**
 * A bounded admission queue with a concurrency limit: at most `concurrency` tasks run,
 * at most `capacity` wait (FIFO); beyond that `push` refuses (the server answers 429).
 * A slot is released only when the task's owner says it is finished — for a generation,
 * when the worker confirms it is done, failed or cancelled — so a disconnected client's
 * generation holds its slot until the worker has really stopped it.
 */
export class BoundedQueue<T> {
  private readonly waiting: T[] = [];
  private running = 0;

  constructor(
    readonly concurrency: number,
    readonly capacity: number,
    /** Called when a task gets a slot. */
    private readonly run: (task: T) => void,
  ) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency expected an integer >= 1, received ${concurrency}`);
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError(`queue capacity expected an integer >= 0, received ${capacity}`);
  }

  /** Tasks waiting for a slot. */
  get depth(): number {
    return this.waiting.length;
  }

  /** Tasks holding a slot. */
  get inFlight(): number {
    return this.running;
  }

  /** Starts the task now, queues it, or returns false when the queue is full. */
  push(task: T): boolean {
    if (this.running < this.concurrency && this.waiting.length === 0) {
      this.running++;
      this.run(task);
      return true;
    }
    if (this.waiting.length >= this.capacity) return false;
    this.waiting.push(task);
    return true;
  }

  /** Drops a task that is still waiting; false if it already has a slot (or is unknown). */
  remove(task: T): boolean {
    const i = this.waiting.indexOf(task);
    if (i < 0) return false;
    this.waiting.splice(i, 1);
    return true;
  }

  /** A running task finished: free its slot and start the next waiting one. */
  release(): void {
    if (this.running > 0) this.running--;
    this.pump();
  }

  /** Starts waiting tasks while slots are free (after a pause, e.g. a worker restart). */
  pump(): void {
    while (this.running < this.concurrency && this.waiting.length) {
      this.running++;
      this.run(this.waiting.shift()!);
    }
  }

  /** Empties the waiting list (shutdown) and returns what was waiting. */
  drain(): T[] {
    return this.waiting.splice(0);
  }
}
