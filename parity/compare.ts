/** Tolerance checks (numpy.allclose convention) that remember the worst element. */

export interface Tolerance {
  rtol: number;
  atol: number;
}

export interface Worst {
  tensor: string;
  abs: number;
  rel: number;
}

/** Collects comparisons for one case. */
export class Comparison {
  readonly compared: string[] = [];
  readonly failures: string[] = [];
  /** The comparison with the largest |a-e| / (atol + rtol|e|). */
  worst: Worst = { tensor: "", abs: 0, rel: 0 };
  private worstRatio = -1;

  /** Checks |actual − expected| ≤ atol + rtol·|expected| elementwise (NaN matches NaN). */
  check(
    name: string,
    actual: ArrayLike<number>,
    expected: ArrayLike<number>,
    tol: Tolerance,
  ): void {
    this.compared.push(name);
    if (actual.length !== expected.length) {
      this.failures.push(`${name}: ${actual.length} values, expected ${expected.length}`);
      return;
    }
    let bad = -1;
    for (let i = 0; i < expected.length; i++) {
      const a = actual[i], e = expected[i];
      if (Number.isNaN(e) && Number.isNaN(a)) continue;
      const abs = Math.abs(a - e);
      const ratio = abs === 0 ? 0 : abs / (tol.atol + tol.rtol * Math.abs(e));
      if (!(ratio <= 1) && bad < 0) bad = i;
      if (ratio > this.worstRatio || Number.isNaN(ratio)) {
        this.worstRatio = Number.isNaN(ratio) ? Infinity : ratio;
        this.worst = {
          tensor: name,
          abs,
          rel: e === 0 ? (abs === 0 ? 0 : Infinity) : abs / Math.abs(e),
        };
      }
    }
    if (bad >= 0) {
      this.failures.push(
        `${name}[${bad}]: got ${actual[bad]}, expected ${
          expected[bad]
        } (rtol ${tol.rtol}, atol ${tol.atol})`,
      );
    }
  }

  /** Exact equality (masks, counts). */
  checkExact(name: string, actual: ArrayLike<number>, expected: ArrayLike<number>): void {
    this.check(name, actual, expected, { rtol: 0, atol: 0 });
  }

  /** Records a failure that is not a tensor mismatch. */
  fail(message: string): void {
    this.failures.push(message);
  }

  get passed(): boolean {
    return this.failures.length === 0 && this.compared.length > 0;
  }
}
