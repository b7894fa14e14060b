/** An error the fake answers with; each protocol module renders it in its own wire format. */
export class AwsError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(code: string, message: string, status = 400) {
    super(message);
    this.name = code;
    this.code = code;
    this.status = status;
  }
  /** awsQuery's `<Type>`: AWS blames the caller for 4xx and itself for 5xx. */
  get faultType(): 'Sender' | 'Receiver' {
    return this.status >= 500 ? 'Receiver' : 'Sender';
  }
}
