// The seeds' JavaScript examples, verbatim except for what a person changes: the host
// (https://api-v2.missioninbox.com), YOUR_API_KEY and the example ids (123, 456, 789).
// Each block reports what it got on stdout as one JSON line: {"step": ..., "value": ...}.
const report = (step, value) => console.log(JSON.stringify({ step, value }));

// --- seed 000: Finding Your Server ID
{
const response = await fetch('https://api-v2.missioninbox.com/api/relay-servers/', {
  method: 'GET',
  headers: {
    'Authorization': 'Api-Key YOUR_API_KEY',
    'Content-Type': 'application/json'
  }
});

const servers = await response.json();
console.log('Available servers:', servers);
report('servers', servers);
}

// --- seed 001: Single Mailbox Creation + task polling
{
const mailboxData = {
    "email": "john.doe",
    "domain": 123,
    "relay_server": 456,
    "password": "SecurePassword123!",
    "project": 789,
    "reply_to": "support@yourdomain.com"
  };
const createResponse = await fetch('https://api-v2.missioninbox.com/api/mailboxes/', {
  method: 'POST',
  headers: {
    'Authorization': 'Api-Key YOUR_API_KEY',
    'Content-Type': 'application/json'
  },
  body: JSON.stringify(mailboxData)
});

const { task_id } = await createResponse.json();
report('task_id', task_id);

// Poll task status
async function checkTaskStatus(taskId) {
  const response = await fetch(`https://api-v2.missioninbox.com/api/tasks/${taskId}/`, {
    method: 'GET',
    headers: {
      'Authorization': 'Api-Key YOUR_API_KEY'
    }
  });

  const task = await response.json();
  return task.status; // 'pending', 'success', 'failure'
}

// Polling function
async function pollMailboxCreation(taskId) {
  const maxAttempts = 30;
  const interval = 5000; // 5 seconds

  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    const status = await checkTaskStatus(taskId);

    console.log(`Task status: ${status}`);

    if (status === 'success') {
      console.log('Mailbox created successfully!');
      return true;
    }

    if (status === 'failure') {
      console.log('Mailbox creation failed');
      return false;
    }

    await new Promise(resolve => setTimeout(resolve, interval));
  }

  return false;
}

// Usage
report('created', await pollMailboxCreation(task_id));
}

// --- seed 001: List Your Mailboxes
{
const response = await fetch('https://api-v2.missioninbox.com/api/mailboxes/', {
  method: 'GET',
  headers: {
    'Authorization': 'Api-Key YOUR_API_KEY'
  }
});

const mailboxes = await response.json();
console.log('Your mailboxes:', mailboxes);
report('mailboxes', mailboxes);
}

// --- seed 001: Getting Server Connection Details
{
const response = await fetch('https://api-v2.missioninbox.com/api/userinfo/', {
  method: 'GET',
  headers: {
    'Authorization': 'Api-Key YOUR_API_KEY'
  }
});

const userInfo = await response.json();
console.log('SMTP Server:', userInfo.ibx_smtp);
console.log('IMAP Server:', userInfo.ibx_imap);
report('userinfo', userInfo);
}

// --- seed 001: Downloading Service-Specific CSV Files
{
const response = await fetch('https://api-v2.missioninbox.com/mailbox/download/smartlead/', {
  method: 'GET',
  headers: {
    'Authorization': 'Api-Key YOUR_API_KEY'
  }
});

const csvData = await response.blob();
// Handle CSV download
report('smartlead', { status: response.status, type: response.headers.get('content-type'), text: await csvData.text() });
}
